{{ config(materialized='table', tags=['index']) }}
-- One row per month received × month handling ended × withdrawn (received_month,
-- finished_month, is_withdrawn): how many dossiers of fct_dossiers there are, received or not
-- (a dossier not received yet has no received month). The per-month models
-- (int_dossier_receipts_by_month, int_dossier_handling_by_month,
-- int_dossier_handling_by_procedure_month) compare their own totals with these to find the
-- months a dossier left (its receipt or end corrected, or reopened), which nothing rebuilt
-- points at: one pass over the facts for the three instead of one each.

select
    received_month,
    finished_month,
    is_withdrawn,
    count(*) as dossiers
from {{ ref('fct_dossiers') }}
group by all
