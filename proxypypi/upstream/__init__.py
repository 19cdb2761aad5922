"""
The upstream indexes: members and their groups, health and load balancing,
bounded HTTP requests, and the ways to reach them (proxies, tunnels).
"""
