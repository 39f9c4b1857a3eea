"""Workers started together race to create Optuna's tables in a new database: the losers' errors,
as PostgreSQL raises them, are told apart from real ones."""

import psycopg.errors
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from nas.study.hpo import lost_creation_race


def _wrapped(kind, orig):
    return kind("CREATE TABLE studies (...)", {}, orig)


def test_a_schema_created_first_by_another_worker_is_a_lost_race():
    assert lost_creation_race(_wrapped(ProgrammingError, psycopg.errors.DuplicateTable("studies")))
    assert lost_creation_race(_wrapped(ProgrammingError, psycopg.errors.DuplicateObject("type")))
    assert lost_creation_race(_wrapped(IntegrityError, psycopg.errors.UniqueViolation("pg_type")))


def test_other_database_errors_are_not():
    denied = psycopg.errors.InsufficientPrivilege("permission denied for schema public")
    assert not lost_creation_race(_wrapped(ProgrammingError, denied))
    refused = psycopg.errors.OperationalError("connection refused")
    assert not lost_creation_race(_wrapped(OperationalError, refused))
    assert not lost_creation_race(ValueError("not a database error"))
