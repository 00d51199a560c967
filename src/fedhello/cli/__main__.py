"""`python -m fedhello.cli`: the same as the installed `fedhello` command."""

from fedhello.cli.commands import main

main()
