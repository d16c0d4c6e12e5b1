"""Adapters for Firestore (run state) and Cloud Storage (payloads). Thin: no pipeline decisions here."""
