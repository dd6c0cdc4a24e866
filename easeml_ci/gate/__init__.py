"""The gate's answers."""
