from closedloop.cli import main

main()
