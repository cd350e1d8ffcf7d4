"""``manage.py tidings_worker``: runs the App's worker beside a Django project."""
