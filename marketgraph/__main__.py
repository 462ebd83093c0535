"""`python -m marketgraph`: the same as the `marketgraph` command."""

from marketgraph.cli import main

main()
