{{ config(
    materialized='incremental',
    unique_key='dossier_id',
    tags=['facts'],
    pre_hook=[
        "{% if is_incremental() %}SET VARIABLE fct_dossiers_versions = (SELECT coalesce(max(version_loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}",
        "{% if is_incremental() %}SET VARIABLE fct_dossiers_steps = (SELECT coalesce(max(steps_loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}",
        "{% if is_incremental() %}SET VARIABLE fct_dossiers_syncs = (SELECT coalesce(max(syncs_loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}",
        "{% if is_incremental() %}SET VARIABLE fct_dossiers_ratings = (SELECT coalesce(max(rating_loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}",
        "{% if is_incremental() %}SET VARIABLE fct_dossiers_catalogue = (SELECT coalesce(max(catalogue_loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}",
        "{% if is_incremental() %}SET VARIABLE fct_dossiers_calendar = (SELECT coalesce(max(calendar_loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}"
    ]
) }}
-- One row per dossier (dossier_id) with the attributes the index counts: effective due time,
-- when and how handling ended, supplements, lateness, fees and online payment, results,
-- digitisation, national-database use, rating, and whether its status changes reached the
-- portal in time. Period attribution is left to the index models.
--
-- Incremental: a dossier is recomputed when its current version, its steps, its status syncs
-- or its rating landed since the last build (`*_loaded_at`), every dossier of a procedure
-- when a new catalogue snapshot lands, and every dossier whose due time comes from the
-- statutory limit when a new calendar lands.

with

{% if is_incremental() %}
-- What the last build had seen of each input (set by the pre_hooks, so that the filters are
-- constants DuckDB can prune with): landing is ordered within a dataset, not across
-- datasets, so each input has its own watermark.
-- Rows landed at the watermark itself are taken again (idempotent); a snapshot is new only
-- when strictly newer, or every build would recompute its dossiers.
changed as materialized (
    select dossier_id from {{ ref('stg_portal__dossiers') }}
    where loaded_at >= getvariable('fct_dossiers_versions')
    union
    select dossier_id from {{ ref('stg_portal__dossier_steps') }}
    where loaded_at >= getvariable('fct_dossiers_steps')
    union
    select dossier_id from {{ ref('stg_portal__dossier_status_syncs') }}
    where loaded_at >= getvariable('fct_dossiers_syncs')
    union
    select dossier_id from {{ ref('stg_reporting__ratings') }}
    where loaded_at >= getvariable('fct_dossiers_ratings')
    union
    -- A new catalogue snapshot changes its procedures' attributes (result on paper,
    -- statutory time limit); a new calendar changes statutory due times.
    select dossier_id from {{ this }}
    where procedure_code in (
        select procedure_code from {{ ref('stg_catalogue__procedures') }}
        where loaded_at > getvariable('fct_dossiers_catalogue')
    )
    union
    select dossier_id from {{ this }}
    where due_source = 'statutory'
      and (select max(loaded_at) from {{ ref('stg_calendar__days') }}) > getvariable('fct_dossiers_calendar')
),

dossiers as not materialized (
    select * from {{ ref('stg_portal__dossiers') }}
    where dossier_id in (select dossier_id from changed)
),

steps as not materialized (
    select * from {{ ref('stg_portal__dossier_steps') }}
    where dossier_id in (select dossier_id from changed)
),

status_syncs as not materialized (
    select * from {{ ref('stg_portal__dossier_status_syncs') }}
    where dossier_id in (select dossier_id from changed)
),

ratings as not materialized (
    select * from {{ ref('stg_reporting__ratings') }}
    where dossier_id in (select dossier_id from changed)
),
{% else %}
dossiers as not materialized (
    select * from {{ ref('stg_portal__dossiers') }}
),

steps as not materialized (
    select * from {{ ref('stg_portal__dossier_steps') }}
),

status_syncs as not materialized (
    select * from {{ ref('stg_portal__dossier_status_syncs') }}
),

ratings as not materialized (
    select * from {{ ref('stg_reporting__ratings') }}
),
{% endif %}

procedures as (
    select * from {{ ref('stg_catalogue__procedures') }}
),

calendar as (
    select * from {{ ref('dim_calendar') }}
),

-- DOSSIER_SYNC: a status change (a processing step) reached the portal in time when the first
-- version carrying its status was received within 24 hours of the step.
-- SPEC: a dossier is synced on time for a period when every status change in the period was.
-- The periods that count a dossier are those holding its receipt: its month, quarter and
-- year; so each gets a flag: some change inside it, and none of those late.
checked_changes as (
    select
        s.dossier_id,
        s.stepped_at,
        s.loaded_at,
        ss.first_synced_at is null or ss.first_synced_at > s.stepped_at + interval 24 hour as is_late,
        date_trunc('month', s.stepped_at) = date_trunc('month', d.received_at) as in_receipt_month,
        date_trunc('quarter', s.stepped_at) = date_trunc('quarter', d.received_at) as in_receipt_quarter,
        date_trunc('year', s.stepped_at) = date_trunc('year', d.received_at) as in_receipt_year
    from steps as s
    inner join dossiers as d on d.dossier_id = s.dossier_id
    left join status_syncs as ss on ss.dossier_id = s.dossier_id and ss.status_code = s.status_code
),

sync_checks as (
    select
        dossier_id,
        count(*) as status_changes,
        min(stepped_at) filter (where is_late) as first_late_sync_change_at,
        bool_or(in_receipt_month) and not bool_or(in_receipt_month and is_late) as is_synced_in_receipt_month,
        bool_or(in_receipt_quarter) and not bool_or(in_receipt_quarter and is_late) as is_synced_in_receipt_quarter,
        bool_or(in_receipt_year) and not bool_or(in_receipt_year and is_late) as is_synced_in_receipt_year,
        max(loaded_at) as loaded_at
    from checked_changes
    group by dossier_id
),

syncs_loaded as (
    select dossier_id, max(loaded_at) as loaded_at from status_syncs group by dossier_id
),

-- Processing stopped (status 8) carries no date of its own; its step does.
stopped as (
    select dossier_id, min(stepped_at) as stopped_at
    from steps
    where status_code = '8'
    group by dossier_id
),

-- Lists decoded once.
decoded as (
    select
        dossier_id,
        coalesce(json_array_length(supplements_json), 0) as supplement_count,
        coalesce(json_array_length(fees_json), 0) > 0 as has_fee_list,
        coalesce(list_sum(list_transform(
            from_json(fees_json, '[{"Gia":"BIGINT"}]'), lambda f: coalesce(f.Gia, 0)
        )), 0) as fee_total_vnd,
        coalesce(list_bool_or(list_transform(
            from_json(results_json, '[{"DuongDanTepTinKetQua":"VARCHAR"}]'),
            lambda r: coalesce(r.DuongDanTepTinKetQua, '') <> ''
        )), false) as has_electronic_result,
        coalesce(list_bool_or(list_transform(
            from_json(components_json, '[{"DuocTaiSuDung":"INTEGER"}]'),
            lambda c: coalesce(c.DuocTaiSuDung, 0) in (1, 2)
        )), false) as has_reused_component,
        coalesce(list_bool_or(list_transform(
            from_json(components_json, '[{"DuocLayTuKhoDMQG":"INTEGER"}]'),
            lambda c: coalesce(c.DuocLayTuKhoDMQG, 0) = 1
        )), false) as has_store_component,
        coalesce(list_bool_or(list_transform(
            from_json(national_db_links_json, '[{"MaCSDL":"VARCHAR"}]'),
            lambda l: l.MaCSDL = 'CSDLQGDC'
        )), false) as uses_population_data
    from dossiers
),

-- Without NgayHenTra the procedure's statutory time limit applies, in working days.
statutory_due as (
    select
        d.dossier_id,
        due_day.calendar_date + (d.received_at - date_trunc('day', d.received_at)) as due_at
    from dossiers as d
    inner join procedures as p on p.procedure_code = d.procedure_code
    inner join calendar as received_day on received_day.calendar_date = cast(d.received_at as date)
    inner join calendar as due_day
        on due_day.is_working_day
        and due_day.working_day_number = received_day.working_day_number + p.statutory_working_days
    where d.due_at is null and d.received_at is not null
),

ended as (
    select
        d.*,
        s.stopped_at,
        -- The first of processed, result returned, stopped or refused.
        least(d.processed_at, d.returned_at, s.stopped_at, d.refused_at) as finished_at
    from dossiers as d
    left join stopped as s using (dossier_id)
)

select
    -- ids
    e.dossier_id,
    e.unit_id,
    e.procedure_code,
    e.field_code,
    e.applicant_type,

    -- channel and status
    e.channel,
    e.channel = 'online' as is_online,
    e.status_code,
    e.status,
    e.status_code = '7' as is_withdrawn,

    -- times
    e.submitted_at,
    e.received_at,
    coalesce(e.due_at, sd.due_at) as due_at,
    case when e.due_at is not null then 'portal' when sd.due_at is not null then 'statutory' end as due_source,
    e.finished_at,
    case e.finished_at
        when e.processed_at then 'processed'
        when e.returned_at then 'returned'
        when e.stopped_at then 'stopped'
        when e.refused_at then 'refused'
    end as finish_kind,

    -- handling
    x.supplement_count,
    fin_day.working_day_number - rec_day.working_day_number as handling_working_days,
    case
        when e.finished_at is null then null
        when x.supplement_count > 1 then true
        else e.finished_at > coalesce(e.due_at, sd.due_at)
    end as is_late,

    -- fees and payment
    x.has_fee_list,
    x.fee_total_vnd,
    x.fee_total_vnd > 0 as has_financial_obligation,
    e.is_paid_online,

    -- results and digitisation
    x.has_electronic_result,
    p.is_result_paper,
    e.is_digitised,
    x.has_reused_component,
    x.has_store_component,
    x.uses_population_data,

    -- sync and rating
    coalesce(sc.status_changes, 0) as status_changes,
    sc.first_late_sync_change_at,
    coalesce(sc.is_synced_in_receipt_month, false) as is_synced_in_receipt_month,
    coalesce(sc.is_synced_in_receipt_quarter, false) as is_synced_in_receipt_quarter,
    coalesce(sc.is_synced_in_receipt_year, false) as is_synced_in_receipt_year,
    r.rating,
    coalesce(r.has_complaint, false) as has_complaint,

    e.synced_at,
    e.lake_file,
    e.lake_row,

    -- landing times of the inputs behind the row (the incremental build's watermarks)
    e.loaded_at as version_loaded_at,
    sc.loaded_at as steps_loaded_at,
    sl.loaded_at as syncs_loaded_at,
    r.loaded_at as rating_loaded_at,
    p.loaded_at as catalogue_loaded_at,
    (select max(loaded_at) from {{ ref('stg_calendar__days') }}) as calendar_loaded_at
from ended as e
inner join decoded as x using (dossier_id)
left join statutory_due as sd using (dossier_id)
left join sync_checks as sc using (dossier_id)
left join syncs_loaded as sl using (dossier_id)
left join ratings as r using (dossier_id)
left join procedures as p on p.procedure_code = e.procedure_code
left join calendar as rec_day on rec_day.calendar_date = cast(e.received_at as date)
left join calendar as fin_day on fin_day.calendar_date = cast(e.finished_at as date)
