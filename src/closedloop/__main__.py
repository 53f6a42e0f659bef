"""`python -m closedloop`."""

from closedloop.cli import main

if __name__ == "__main__":  # not when a spawned writer process imports this module
    main()
