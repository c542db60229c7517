"""The `proxal` command line: parses arguments, prints, and calls the layers below."""
