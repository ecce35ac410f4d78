"""Developer tools run from the checkout (`make run`'s supervisor); not part of the services."""
