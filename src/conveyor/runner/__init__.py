"""`conveyor runner`: runs the test and build steps of runs on another machine.

`link` speaks to the server(s), `job` checks a claimed run out, runs its steps and
uploads its artifact, `main` claims runs one after the other. A runner imports
nothing of the server: no database, no FastAPI (like the agent).
"""
