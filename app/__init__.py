"""The composition root: the hub process (hub.py), the command line (cli/), the demo."""
