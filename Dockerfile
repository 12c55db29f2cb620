# PiggyBack image: web, CPU worker and (with the NVIDIA runtime) GPU worker share it.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt package.json package-lock.json ./
# GPU images: build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --index-url ${TORCH_INDEX} torch==2.13.0 && pip install -r requirements.txt && npm ci --omit=dev --no-audit --no-fund
COPY . .
RUN DJANGO_ENV=development REDIS_URL=redis://unused:6379/0 DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["sh", "-c", "gunicorn piggyback.wsgi:application --bind 0.0.0.0:8000 --workers ${WEB_CONCURRENCY:-4} --threads 1 --timeout 120"]
