-- A report shows the day it was filed as sent (`filed_on`, ReportFiled carries it), beside the
-- instant it was recorded (`filed_at`, shown as `recorded_at`). Reports on file before: the day
-- they were recorded, in the group's time zone (shared/localtime.py: WIB/WITA/WIT by province).
ALTER TABLE monthly_reports ADD COLUMN filed_on date;
UPDATE monthly_reports SET filed_on = (filed_at AT TIME ZONE CASE
    WHEN province_code IN ('51', '52', '53', '63', '64', '65', '71', '72', '73', '74', '75', '76')
        THEN 'Asia/Makassar'
    WHEN province_code IN ('81', '82', '91', '92', '93', '94', '95', '96') THEN 'Asia/Jayapura'
    ELSE 'Asia/Jakarta' END)::date;
ALTER TABLE monthly_reports ALTER COLUMN filed_on SET NOT NULL;
