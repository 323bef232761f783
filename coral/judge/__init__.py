"""The judge box: QuixBugs problems, the sandbox that runs candidates, fitness.

Kept import-free: the sandbox's fork server imports this package, and must start fast."""
