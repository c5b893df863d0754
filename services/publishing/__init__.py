"""Publishing: how government systems put records of their datasets on the feeds, from Python or the CLI."""
