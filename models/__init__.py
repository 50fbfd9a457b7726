"""Built-in model zoo."""
