from latentcast.cli import main

main()
