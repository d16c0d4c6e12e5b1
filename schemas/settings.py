"""Configuration, read from VALIDIBOT_* environment variables. Every limit the service enforces is here."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VALIDIBOT_", extra="ignore", populate_by_name=True)

    project: str = Field(
        default="validibot-local", validation_alias=AliasChoices("VALIDIBOT_PROJECT", "GOOGLE_CLOUD_PROJECT")
    )
    # The pipeline's own objects; only the service accounts may read or write it (DESIGN §3).
    bucket: str = "validibot-local"
    # Where users, the web and the API put submissions: users may create objects there and nothing else.
    inbox_bucket: str = "validibot-local-inbox"
    # The service secret each attempt's output-signing key is derived from (DESIGN §6). Functions hold it; jobs get
    # only their attempt's key. Secret Manager in production; `validibot up` keeps a generated one in .validibot/.
    signing_secret: SecretStr = SecretStr("")
    notifications_topic: str = "validibot-gcs-notifications"
    run_events_topic: str = "validibot-run-events"
    dead_letter_topic: str = "validibot-dead-letter"
    pipeline_subscription: str = "validibot-pipeline"
    maintenance_topic: str = "validibot-maintenance"
    maintenance_subscription: str = "validibot-maintenance"
    web_url: str = "http://127.0.0.1:8000"
    # Each stage's own Firestore database (`validibot deploy` makes validibot-{stage}), so stages that share a project
    # share no run, user or key.
    firestore_database: str = "(default)"
    # The deployment stage (dev, prod, ...): in every resource name `validibot deploy` makes, and on every log line.
    stage: str = Field(default="local", pattern=r"^[a-z][a-z0-9-]{0,19}$")
    # JSON lines in Cloud Logging's structured format (the default, for production), or plain text (`validibot up`
    # uses it unless VALIDIBOT_LOG_FORMAT says otherwise).
    log_format: Literal["json", "text"] = "json"

    max_submission_bytes: int = Field(default=10 * MIB, gt=0)
    # In UTF-8 bytes, what file systems count: 255 is the usual limit for one path component.
    max_filename_bytes: int = Field(default=200, gt=0, le=255)
    # A .zip submission unpacked into a workflow's input roles (DESIGN §12; jobs/bundles.py) is refused whole past
    # any of these, before anything is written where the header declares it and on the bytes really unpacked where
    # the header lies: members in its central directory, bytes unpacked in all, and how many times its compressed
    # size one member may unpack to (members under 1 MiB are exempt from the ratio: they cannot be bombs).
    max_bundle_members: int = Field(default=1000, gt=0)
    max_bundle_bytes: int = Field(default=256 * MIB, gt=0)
    max_bundle_ratio: float = Field(default=100.0, ge=1)
    max_envelope_bytes: int = Field(default=4 * MIB, gt=0)
    max_messages_per_output: int = Field(default=10_000, gt=0)
    # What one output may put into Firestore; a validator's text is shortened to these, anything else over them
    # fails the step.
    max_message_chars: int = Field(default=2000, gt=0)
    max_name_chars: int = Field(default=512, gt=0)
    max_metrics_per_output: int = Field(default=200, gt=0)
    max_artifacts_per_output: int = Field(default=50, gt=0)
    max_outputs_bytes: int = Field(default=16 * 1024, gt=0)
    # A step's findings, its skipped siblings and the run documents share one 500-write commit.
    max_findings_per_step: int = Field(default=200, gt=0, le=300)
    step_timeout_seconds: int = Field(default=600, gt=0)
    # A claim (DISPATCHING) lasts seconds: the launch call, or an inline run within its budget. One older than this
    # was lost with its function; the tick releases it for another claim, up to max_dispatch_tries claims.
    dispatch_lease_seconds: int = Field(default=120, gt=0)
    max_dispatch_tries: int = Field(default=3, gt=0)
    receipt_retention_days: int = Field(default=30, gt=0)
    # The maintenance tick (DESIGN §13): how often `validibot up` publishes it, how many documents each sweep may
    # change per tick, how long past timeout_at a job may still deliver, and how long a PENDING run or a PROCESSING
    # receipt may wait for its own redelivery before the tick replays its effects.
    tick_seconds: float = Field(default=10.0, gt=0)
    sweep_batch: int = Field(default=100, gt=0, le=400)
    timeout_grace_seconds: int = Field(default=30, ge=0)
    lost_effects_seconds: int = Field(default=60, gt=0)
    # An inline validation still running after this long is handed to a job, so one large document cannot hold
    # the functions (and the small documents queued behind it) for long.
    inline_budget_seconds: float = Field(default=3.0, gt=0)
    # Inline validators run a submission up to this size in the function; a larger one goes to a job at once.
    inline_max_bytes: int = Field(default=2 * MIB, ge=0)
    # Run an inline step in the function that scheduled it, chaining through consecutive inline steps (DESIGN §16).
    inline_chain: bool = True

    # Job validators (EnergyPlus, FMU): where they run and what they may use.
    job_launcher: Literal["local", "cloudrun"] = "local"
    local_max_concurrent_jobs: int = Field(default=2, gt=0)
    # Extra seconds the local launcher gives a job past the step's timeout before it kills the process group.
    local_kill_grace_seconds: int = Field(default=5, ge=0)
    cloudrun_region: str = "us-central1"
    cloudrun_job_prefix: str = "validibot-validator-"
    # After the validator type: `validibot deploy` names each stage's jobs validibot-validator-{type}-{stage}.
    cloudrun_job_suffix: str = ""
    # Empty means the real Jobs API; set to a local endpoint (http://127.0.0.1:PORT) to test the REST client.
    cloudrun_api_endpoint: str = ""
    max_artifact_bytes: int = Field(default=512 * MIB, gt=0)
    web_runs_per_page: int = Field(default=50, gt=0, le=500)
    web_findings_per_page: int = Field(default=500, gt=0, le=5000)
    # Live run pages (Server-Sent Events fed by Firestore listeners): each open page holds one of the web's threads
    # and one watch on its run. Past the cap a page polls instead; a quiet stream sends a keep-alive (which is also
    # how a closed page is noticed and its watch released) and ends after web_live_max_seconds (the page then
    # polls).
    web_threads: int = Field(default=64, gt=0, le=1000)
    web_max_live_pages: int = Field(default=48, gt=0)
    web_live_heartbeat_seconds: float = Field(default=15.0, gt=0)
    web_live_max_seconds: int = Field(default=3600, gt=0)
    # After an upload from the dashboard, how long to wait for INTAKE to make its run before showing the run page.
    web_submit_wait_seconds: float = Field(default=10.0, gt=0)
    # Results read whole to draw a chart: larger files are offered for download only.
    web_chart_max_bytes: int = Field(default=8 * MIB, gt=0)

    # People and programs (DESIGN §14). The web's session cookies are signed with this key: the web alone holds it
    # (Secret Manager in production; `validibot up` keeps a generated one in ~/.validibot/).
    web_secret_key: SecretStr = SecretStr("")
    session_hours: float = Field(default=12.0, gt=0)
    # Sign-in is refused for signin_lockout_seconds after this many wrong passwords in a row.
    signin_max_failures: int = Field(default=5, gt=0)
    signin_lockout_seconds: int = Field(default=900, gt=0)
    # Sign-in and sign-out posts per client address, per web process (Flask-Limiter's notation).
    signin_rate_limit: str = "30 per minute"
    # Requests per API key (or, without one, per client address), per web process, in Flask-Limiter's notation.
    api_rate_limit: str = "600 per minute"
    # How long an Idempotency-Key's submission is remembered and replayed.
    idempotency_hours: int = Field(default=24, gt=0)
    # A request whose Idempotency-Key record has had no run for this long (its upload died) may be retried: longer
    # than a client waits for an answer (the CLI: 120 s), so a slow first request is not taken over.
    idempotency_stale_seconds: int = Field(default=600, gt=0)
    # Behind Identity-Aware Proxy: the audience its signed header (x-goog-iap-jwt-assertion) must carry, e.g.
    # /projects/NUMBER/global/backendServices/ID. Empty: no IAP, people sign in with email and password.
    iap_audience: str = ""

    @model_validator(mode="after")
    def _two_trust_zones(self) -> Settings:
        if self.bucket == self.inbox_bucket:
            raise ValueError("VALIDIBOT_BUCKET and VALIDIBOT_INBOX_BUCKET must be two buckets (DESIGN §3)")
        return self

    def as_environment(self) -> dict[str, str]:
        """These settings as the VALIDIBOT_* variables a child process reads back; secrets are never included."""
        return {
            f"VALIDIBOT_{name.upper()}": str(value)
            for name, value in self.model_dump(exclude={"signing_secret", "web_secret_key"}).items()
        }

    def signing_secret_bytes(self) -> bytes:
        secret = self.signing_secret.get_secret_value()
        if not secret:
            raise RuntimeError("VALIDIBOT_SIGNING_SECRET is not set: outputs can be neither signed nor verified")
        return secret.encode()
