"""Settings of the example project: a JSON API, no models, tidings on its own store."""

import os
from pathlib import Path
from urllib.parse import urlsplit

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
if "DJANGO_POSTGRES" in os.environ:  # postgresql://user@host:port/name
    _pg = urlsplit(os.environ["DJANGO_POSTGRES"])
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _pg.path.lstrip("/"),
            "USER": _pg.username or "",
            "PASSWORD": _pg.password or "",
            "HOST": _pg.hostname or "",
            "PORT": _pg.port or "",
        }
    }

TIDINGS = {
    "APP": "box_office.messaging:cinema",
    # Without STORE, a PostgreSQL default database is used (in SCHEMA), else the App's own.
    "STORE": os.environ.get(
        "TIDINGS_STORE",
        None if "DJANGO_POSTGRES" in os.environ else f"sqlite:///{BASE_DIR / 'cinema.db'}",
    ),
    "SCHEMA": os.environ.get("TIDINGS_SCHEMA", "tidings"),
    "TIMEOUT": 10,
    # A worker in each web process; or none here, and `manage.py tidings_worker` beside them.
    "WORKER": os.environ.get("TIDINGS_WORKER") == "1",
}
