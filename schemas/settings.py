"""Configuration, read from VALIDIBOT_* environment variables. Every limit the service enforces is here."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VALIDIBOT_", extra="ignore", populate_by_name=True)

    project: str = Field(
        default="validibot-local", validation_alias=AliasChoices("VALIDIBOT_PROJECT", "GOOGLE_CLOUD_PROJECT")
    )
    bucket: str = "validibot-local"
    notifications_topic: str = "validibot-gcs-notifications"
    run_events_topic: str = "validibot-run-events"
    dead_letter_topic: str = "validibot-dead-letter"
    pipeline_subscription: str = "validibot-pipeline"
    default_org: str = "demo"
    web_url: str = "http://127.0.0.1:8000"

    max_submission_bytes: int = Field(default=10 * MIB, gt=0)
    max_filename_length: int = Field(default=200, gt=0, le=900)
    max_envelope_bytes: int = Field(default=4 * MIB, gt=0)
    max_messages_per_output: int = Field(default=10_000, gt=0)
    # A step's findings, its skipped siblings and the run documents share one 500-write commit.
    max_findings_per_step: int = Field(default=200, gt=0, le=300)
    step_timeout_seconds: int = Field(default=600, gt=0)
    dispatch_lease_seconds: int = Field(default=900, gt=0)
    receipt_retention_days: int = Field(default=30, gt=0)

    # Job validators (EnergyPlus, FMU): where they run and what they may use.
    job_launcher: Literal["local", "cloudrun"] = "local"
    local_max_concurrent_jobs: int = Field(default=2, gt=0)
    # Extra seconds the local launcher gives a job past the step's timeout before it kills the process group.
    local_kill_grace_seconds: int = Field(default=5, ge=0)
    cloudrun_region: str = "us-central1"
    cloudrun_job_prefix: str = "validibot-validator-"
    # Empty means the real Jobs API; set to a local endpoint (http://127.0.0.1:PORT) to test the REST client.
    cloudrun_api_endpoint: str = ""
    max_artifact_bytes: int = Field(default=512 * MIB, gt=0)
    web_runs_per_page: int = Field(default=50, gt=0, le=500)
    web_findings_per_page: int = Field(default=500, gt=0, le=5000)

    def as_environment(self) -> dict[str, str]:
        """These settings as the VALIDIBOT_* variables a child process reads back."""
        return {f"VALIDIBOT_{name.upper()}": str(value) for name, value in self.model_dump().items()}
