-- A report's production unit is a code (ReportFiled/ReportAmended v2). Every report so far came
-- from a version 1 event, which the upcaster maps the same way: the unit typed exactly as a code
-- keeps it, anything else becomes 'lainnya'; so a rebuild from the event store gives the same
-- table.
UPDATE monthly_reports SET production_unit = CASE
    WHEN lower(btrim(production_unit, E' \t\r\n')) IN (
        'kg', 'liter', 'meter', 'pcs', 'unit', 'paket', 'porsi', 'ekor', 'lembar', 'layanan',
        'lainnya')
    THEN lower(btrim(production_unit, E' \t\r\n'))
    ELSE 'lainnya' END;
