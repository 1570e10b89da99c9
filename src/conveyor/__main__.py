from conveyor.entry import app

app()
