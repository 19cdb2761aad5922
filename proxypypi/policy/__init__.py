"""
The supply-chain policy: a cooldown for new releases, deny and allow
rules, PEP 792 quarantine.  What a page shows and which files are served
are decided here (`proxypypi.policy.decision`), once per page change and
per rule change, never per page request.
"""
