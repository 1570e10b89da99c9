"""The agent's side of routing: the drivers of a host's router (embedded or HAProxy).

`spec.Router` is the driver seam; `embedded.EmbeddedRouter` drives the `conveyor router`
process (the data plane, `conveyor.router`) through its admin socket, and
`haproxy.HAProxyRouter` drives an HAProxy. What travels between the agent and the router
is defined in `conveyor.routespec`, which both sides import; the router never imports this.
"""
