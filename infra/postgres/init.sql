-- Run once by the postgres image on an empty data directory, as the superuser (mounted into
-- /docker-entrypoint-initdb.d/ by docker-compose.yml; 20-passwords.sh runs after it).
-- Least privilege: one login role per service, owning only its own database. No service
-- connects as the superuser, none can connect to another's database (CONNECT is revoked from
-- PUBLIC; the owner keeps it), none may create roles or databases. The roles' passwords are set
-- from the compose secrets by infra/postgres/passwords.sh, never written here.
-- Each service reads its own <SERVICE>_DATABASE_URL and <SERVICE>_DATABASE_PASSWORD_FILE.
CREATE ROLE recruitment LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE ROLE groups LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE ROLE mentoring LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE ROLE evaluation LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;

CREATE DATABASE recruitment OWNER recruitment;
CREATE DATABASE groups OWNER groups;
CREATE DATABASE mentoring OWNER mentoring;
CREATE DATABASE evaluation OWNER evaluation;

REVOKE ALL ON DATABASE recruitment, groups, mentoring, evaluation FROM PUBLIC;
REVOKE ALL ON DATABASE postgres, template1 FROM PUBLIC;
