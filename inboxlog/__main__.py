from inboxlog.cli import main

main()
