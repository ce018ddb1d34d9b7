package main

import (
	"errors"
	"path/filepath"

	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/server"
	"github.com/spf13/cobra"
)

func keysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "A deployment's keys, made once for every replica (arx serve --key-dir)",
	}
	var origin string
	initCmd := &cobra.Command{
		Use:   "init DIR --origin NAME",
		Short: "Make a deployment's log key, credential key and first admin token in DIR",
		Long: `Make a deployment's keys in DIR, a new or empty directory: log.key and
log.pub (the log's signing key, named by --origin), credential.key (signs
per-call credentials) and admin.token (the first operator token), each
readable by its owner only. Keep DIR in a secret store and hand a copy to
every replica: arx serve --key-dir DIR reads the keys from it and never
makes its own, and the first replica to start adopts admin.token.

  arx keys init ./arx-keys --origin example.com/arx
  kubectl create secret generic arx-keys --from-file=./arx-keys

log.pub is public: auditors verify the bucket with it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if origin == "" {
				return withHint(errors.New("no --origin"), "name the deployment's log, such as --origin example.com/arx (it is in every checkpoint)")
			}
			dir := args[0]
			if err := server.InitKeys(dir, origin); err != nil {
				return withHint(err, "choose a new directory; an existing deployment keeps the keys it has")
			}
			inert.Fprintf(cmd.OutOrStdout(), "keys of %s made in %s:\n  %s  %s  %s  %s\n",
				origin, dir, server.LogKeyFile, server.LogPubFile, server.CredentialKeyFile, server.AdminTokenFile)
			inert.Fprintf(cmd.OutOrStdout(), "hand them to every replica: arx serve --key-dir %s\n", dir)
			inert.Fprintf(cmd.OutOrStdout(), "the log's public key, for auditors: %s\n", filepath.Join(dir, server.LogPubFile))
			return nil
		},
	}
	initCmd.Flags().StringVar(&origin, "origin", "", "the name of the deployment's log, such as example.com/arx")
	tokenCmd := &cobra.Command{
		Use:   "admin-token DIR",
		Short: "Add a first admin token to a key directory that has none",
		Long: `Write a new admin token to DIR/admin.token (readable by its owner only),
for a key directory made from an existing deployment's keys that has never
had an admin token, or whose token was removed. A deployment adopts it only
at its first start; one that has an admin token keeps its own.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := server.AddAdminToken(args[0]); err != nil {
				return withHint(err, "a key directory holds one admin token; remove it first only if no deployment uses it")
			}
			inert.Fprintf(cmd.OutOrStdout(), "admin token written to %s\n", filepath.Join(args[0], server.AdminTokenFile))
			return nil
		},
	}
	cmd.AddCommand(initCmd, tokenCmd)
	return cmd
}
