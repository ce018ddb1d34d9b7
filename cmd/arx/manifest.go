package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/manifest"
	"github.com/spf13/cobra"
)

func manifestCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "manifest", Short: "Work with job descriptions (manifests/job_description.yaml)"}
	cmd.AddCommand(manifestLintCmd(), manifestSchemaCmd(), manifestCheckCmd(), manifestExportCmd(), manifestReplayCmd(),
		manifestApplyCmd(), manifestShadowCmd(), manifestPromoteCmd(), manifestDiscardCmd())
	return cmd
}

func manifestLintCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "lint FILE",
		Short: "Check a job description; exits 0 when valid, else 1 with FILE:LINE: lines",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := manifest.ParseFile(args[0])
			var me *manifest.Error
			if err != nil && !errors.As(err, &me) {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				problems := []manifest.Problem{}
				if me != nil {
					problems = me.Problems
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				enc.Encode(map[string]any{"file": args[0], "valid": me == nil, "problems": problems})
			} else if me != nil {
				fmt.Fprint(out, me.Error()+"\n")
			} else {
				inert.Fprintf(out, "%s: valid\n", args[0])
			}
			if me != nil {
				return exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func manifestSchemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of job_description.yaml, for editors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := cmd.OutOrStdout().Write(manifest.Schema)
			return err
		},
	}
}
