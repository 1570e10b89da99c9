from conveyor.entry import main

main()
