"""Settings of the example project: a JSON API, no models, tidings on its own store."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "cinema_site.urls"
WSGI_APPLICATION = "cinema_site.wsgi.application"
USE_TZ = True

INSTALLED_APPS = ["box_office", "tidings.integrations.django"]
MIDDLEWARE = ["tidings.integrations.django.RefusedMiddleware"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "django.db"}}

TIDINGS = {
    "APP": "box_office.messaging:cinema",
    # Without STORE, a PostgreSQL default database is used (schema "tidings"), else the App's own.
    "STORE": os.environ.get("TIDINGS_STORE", f"sqlite:///{BASE_DIR / 'cinema.db'}"),
    "TIMEOUT": 10,
    # A worker in each web process; or none here, and `manage.py tidings_worker` beside them.
    "WORKER": os.environ.get("TIDINGS_WORKER") == "1",
}
