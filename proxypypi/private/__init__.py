"""
Private projects: uploaded files, their pages, and who may change them.
"""
