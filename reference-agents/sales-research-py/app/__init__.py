"""sales-research-py: ARX's Python reference agent (a FastAPI app)."""
