from kinject.cli import main

main()
