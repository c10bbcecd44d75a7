-- An applicant's phone and e-mail are optional (historical rosters have neither): NULL when not
-- given. The programme may still require them (services/recruitment/config: [contact] required).
ALTER TABLE applicants ALTER COLUMN phone DROP NOT NULL, ALTER COLUMN email DROP NOT NULL;
