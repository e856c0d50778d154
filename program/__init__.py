"""What `__main__.py` does besides registering components, under Pulumi: read and check the
stack's config, evaluate its systems, read what its last update exported, say what changes,
pick a rebuild's snapshot, shape the stack outputs. The logic is in flakefleet/ (no Pulumi
there); these modules turn it into Pulumi's terms (RunError, diagnostics, Outputs, invokes)."""
