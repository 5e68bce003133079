"""A member (created by the signup view) and an export (created by the export view)."""

import secrets

from django.db import models


def new_export_id() -> str:
    """An export id usable as the worker's file name: ``[A-Za-z0-9_-]``, at most 64 characters."""
    return f"exp_{secrets.token_hex(8)}"


class Member(models.Model):
    """Someone who signed up; gets a welcome email."""

    email = models.EmailField(unique=True)
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)


class SignupEvent(models.Model):
    """An audit row written in the same transaction as the member."""

    member = models.ForeignKey(Member, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)


class Export(models.Model):
    """A CSV export the Rust worker generates (task ``generate_csv`` on queue ``exports``)."""

    class Status(models.TextChoices):
        QUEUED = "queued"  # the task is stored in JetStream
        REFUSED = "refused"  # the task stream was full: nothing queued
        UNKNOWN = "unknown"  # no ack: may or may not be queued (re-enqueue with the same key)

    export_id = models.CharField(max_length=64, unique=True, default=new_export_id)
    rows = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNKNOWN)
    task_id = models.CharField(max_length=256, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
