"""
The composition root (`proxypypi.service.compose`): it builds the object
graph of a running proxy once, and the services that start and stop it.
"""
