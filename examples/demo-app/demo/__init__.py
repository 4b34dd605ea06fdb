"""A small application that deploys the way CommCare HQ does (stdlib only)."""
