"""The store-and-forward queue: every reading lives here until the broker acknowledged it.
"""
