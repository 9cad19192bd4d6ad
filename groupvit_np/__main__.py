"""`python -m groupvit_np`: the same as the `groupvit-np` command."""

from .cli import main

raise SystemExit(main())
