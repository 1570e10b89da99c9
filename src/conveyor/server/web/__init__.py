"""The web dashboard: server-rendered pages made live with htmx and server-sent events."""
