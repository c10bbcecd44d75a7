-- A TKS reports only on months its contract covers: mentoring keeps the contract's dates
-- (TksRecruited/TksContractRenewed carry them), not only its year. A renewal that follows on
-- from the contract on file extends it; one after a gap replaces it. TKS known before this
-- migration had only the year: their contract is taken as that calendar year.
ALTER TABLE mentors ADD COLUMN contract_start date, ADD COLUMN contract_end date;
UPDATE mentors SET contract_start = make_date(contract_year, 1, 1),
                   contract_end = make_date(contract_year, 12, 31);
ALTER TABLE mentors ALTER COLUMN contract_start SET NOT NULL,
                    ALTER COLUMN contract_end SET NOT NULL;
