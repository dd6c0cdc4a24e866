"""A tenant's data: the schema inferred from it and the test sets exported from it."""
