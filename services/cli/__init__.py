"""The `pdo` command line for operators and developers."""
