-- Run once by the official postgres image on an empty data directory
-- (mounted into /docker-entrypoint-initdb.d/ by docker-compose.yml).
-- One database per service; each service reads its own <SERVICE>_DATABASE_URL.
CREATE DATABASE recruitment;
CREATE DATABASE groups;
CREATE DATABASE mentoring;
CREATE DATABASE evaluation;
