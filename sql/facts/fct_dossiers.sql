{{ config(
    materialized='incremental',
    unique_key='dossier_id',
    tags=['facts'],
    pre_hook=[
        "{% if is_incremental() %}SET VARIABLE fct_dossiers_versions = (SELECT coalesce(max(version_loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}",
        "{% if is_incremental() %}SET VARIABLE fct_dossiers_steps = (SELECT coalesce(max(steps_loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}",
        "{% if is_incremental() %}SET VARIABLE fct_dossiers_ratings = (SELECT coalesce(max(rating_loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}",
        "{% if is_incremental() %}SET VARIABLE fct_dossiers_payments = (SELECT coalesce(max(payment_loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}",
        "{% if is_incremental() %}SET VARIABLE fct_dossiers_catalogue = (SELECT coalesce(max(catalogue_loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}",
        "{% if is_incremental() %}SET VARIABLE fct_dossiers_calendar = (SELECT coalesce(max(calendar_loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}"
    ],
    post_hook=[
        "DELETE FROM {{ ref('int_dossier_steps_before_their_dossier') }} WHERE dossier_id IN (SELECT f.dossier_id FROM {{ this }} AS f INNER JOIN (SELECT DISTINCT dossier_id FROM {{ ref('int_dossier_steps_before_their_dossier') }}) AS e ON e.dossier_id = f.dossier_id)"
    ]
) }}
-- depends_on: {{ ref('int_dossier_steps_before_their_dossier') }} (read by the incremental branch only; dbt needs the hint)
-- The post_hook consumes that table: the early steps of every dossier built here are deleted
-- from it once this model has built (each was read when its dossier was first computed).
-- One row per dossier (dossier_id) with the attributes the index counts: effective due time,
-- when and how handling ended, supplements, lateness, fees and online payment, results,
-- digitisation, national-database use, rating, and whether its status changes reached the
-- portal in time. Period attribution is left to the index models.
--
-- The processing steps are summarised per dossier straight from the lake (tens of millions
-- of rows are never copied into the warehouse): when processing stopped, and whether each
-- status change reached the portal in time. A step landed twice changes none of these.
--
-- Incremental: a dossier is recomputed when any version of it (current or not: a late one
-- moves a status's first receive time), its steps, its rating or its payments landed since the
-- last build
-- (`*_loaded_at`), every dossier of a procedure when a new catalogue snapshot lands, and
-- every dossier whose due time comes from the statutory limit when a new calendar lands.
--
-- Its steps are read from the step months (the lake's `step_month`, the month of
-- ThoiDiemXuLy, or the month a step without a time landed in) where the kept dossiers' known
-- steps start (`first_status_change_at`, `steps_first_loaded_at`), plus the steps landed since
-- the last build, plus the steps that landed before any version of their dossier
-- (int_dossier_steps_before_their_dossier), because a dossier seen for the first time has no
-- known months.

with

-- DOSSIER_SYNC's sync window for a dossier received in each month: that of the methodology in
-- force for its month, its quarter and its year (each period judged by its own, each looked up
-- on its own: a methodology effective from July scores 2024-08 but not the year 2024). A period
-- no methodology scores has no window: it allows no delay (the period has no index anyway).
windows as (
    select
        pe.starts_on as month,
        coalesce(mm.sync_window_hours, 0) as window_month,
        coalesce(mq.sync_window_hours, 0) as window_quarter,
        coalesce(my.sync_window_hours, 0) as window_year
    from {{ ref('dim_periods') }} as pe
    left join {{ ref('int_methodology_by_period') }} as mm on mm.period = pe.period
    left join {{ ref('int_methodology_by_period') }} as mq
        on mq.period = strftime(pe.starts_on, '%Y') || '-Q' || cast(quarter(pe.starts_on) as varchar)
    left join {{ ref('int_methodology_by_period') }} as my on my.period = strftime(pe.starts_on, '%Y')
    where pe.period_type = 'month'
),

{% if is_incremental() %}
-- What the last build had seen of each input (set by the pre_hooks, so that the filters are
-- constants DuckDB can prune with): landing is ordered within a dataset, not across
-- datasets, so each input has its own watermark.
-- Rows stamped at the watermark itself were seen (a landing is stamped after the previous one
-- committed); a stamp is shared by a whole chunk of a landing, so taking equal stamps again
-- would redo that chunk at every build.
changed as materialized (
    select dossier_id from {{ ref('stg_portal__dossiers') }}
    where loaded_at > getvariable('fct_dossiers_versions')
    union
    select dossier_id from {{ ref('stg_portal__dossier_step_records') }}
    where loaded_at > getvariable('fct_dossiers_steps')
    union
    select dossier_id from {{ ref('stg_reporting__ratings') }}
    where loaded_at > getvariable('fct_dossiers_ratings')
    union
    select dossier_id from {{ ref('stg_payments__payments') }}
    where loaded_at > getvariable('fct_dossiers_payments')
    union
    -- A new catalogue snapshot changes its procedures' attributes (result on paper,
    -- statutory time limit); a new calendar changes statutory due times and the working days
    -- of every handling (a holiday added between a dossier's receipt and its end), so it
    -- recomputes every dossier (calendars change a few times a year).
    select dossier_id from {{ this }}
    where procedure_code in (
        select procedure_code from {{ ref('stg_catalogue__procedures') }}
        where loaded_at > getvariable('fct_dossiers_catalogue')
    )
    union
    select dossier_id from {{ this }}
    where (select max(loaded_at) from {{ ref('stg_calendar__days') }}) > getvariable('fct_dossiers_calendar')
    union
    -- a new sync window (a methodology changed or added) re-judges the dossiers received in
    -- the months it applies to
    select dossier_id from {{ this }}
    where list_contains((
        select list(k.month)
        from (
            select distinct received_month as month, sync_window_hours_month, sync_window_hours_quarter, sync_window_hours_year
            from {{ this }}
        ) as k
        left join windows as w on w.month = k.month
        where k.sync_window_hours_month is distinct from w.window_month
           or k.sync_window_hours_quarter is distinct from w.window_quarter
           or k.sync_window_hours_year is distinct from w.window_year
    ), received_month)
),

-- Found on the key column, fetched by row id (as staging's kept rows).
dossiers as materialized (
    select * from {{ ref('stg_portal__dossiers') }}
    where rowid in (
        select rowid from {{ ref('stg_portal__dossiers') }}
        where dossier_id in (select dossier_id from changed)
    )
),

-- The union removes a step read twice (a step landed since the last build in a month read
-- anyway); the summary below takes minimums and maximums, which a repeated step cannot change.
step_records as materialized (
    select dossier_id, stepped_at, status_code, loaded_at
    from {{ ref('stg_portal__dossier_step_records') }}
    where step_month >= (
        select strftime(least(min(first_status_change_at), min(steps_first_loaded_at)), '%Y-%m')
        from {{ this }}
        where dossier_id in (select dossier_id from changed)
    )
      and dossier_id in (select dossier_id from changed)
    union
    select dossier_id, stepped_at, status_code, loaded_at
    from {{ ref('stg_portal__dossier_step_records') }}
    where loaded_at > getvariable('fct_dossiers_steps')
      and dossier_id in (select dossier_id from changed)
    union
    select dossier_id, stepped_at, status_code, loaded_at
    from {{ ref('int_dossier_steps_before_their_dossier') }}
    where dossier_id in (select dossier_id from changed)
),

-- The ratings of the dossiers read above (only those get a row). Filtered by `dossiers`, not
-- `changed`: DuckDB's estimate of `changed` (a union of five parts) exceeds the 4 M ratings,
-- and it then built the semi join's hash table on the ratings (0.7 CPU-s at 10 M).
ratings as not materialized (
    select * from {{ ref('stg_reporting__ratings') }}
    where dossier_id in (select dossier_id from dossiers)
),

payment_records as not materialized (
    select * from {{ ref('stg_payments__payments') }}
    where dossier_id in (select dossier_id from dossiers)
),
{% else %}
dossiers as not materialized (
    select * from {{ ref('stg_portal__dossiers') }}
),

step_records as not materialized (
    select dossier_id, stepped_at, status_code, loaded_at
    from {{ ref('stg_portal__dossier_step_records') }}
),

ratings as not materialized (
    select * from {{ ref('stg_reporting__ratings') }}
),

payment_records as not materialized (
    select * from {{ ref('stg_payments__payments') }}
),
{% endif %}

-- Online payment: where the payments feed has the dossier's payments, it decides (paid when
-- one of them is paid now: a refunded or cancelled payment is not); otherwise the dossier's own
-- flag (DuocThanhToanTrucTuyen) does.
payments as (
    select
        dossier_id,
        bool_or(payment_status = 'paid') as has_paid_payment,
        max(loaded_at) as loaded_at
    from payment_records
    group by dossier_id
),

procedures as (
    select * from {{ ref('stg_catalogue__procedures') }}
),

calendar as (
    select * from {{ ref('dim_calendar') }}
),

working_days as (
    select * from {{ ref('dim_working_days') }}
),

-- DOSSIER_SYNC: a status change (a processing step) reached the portal when the first version
-- carrying its status at or after the step was received (a status can come back: processing,
-- supplement, processing again, and each change is matched on its own); its delay is the time
-- between the two. A change with no such version has not reached the portal (yet). SPEC: a
-- dossier is synced on time for a period when every status change in the period reached the
-- portal within the methodology's sync window. The periods that count a dossier are those
-- holding its receipt (its month, quarter and year). The one verdict, per receipt period type,
-- is a moment, `sync_fails_at_month` (… quarter, year), as `late_since` is for handling: the
-- first moment a change inside the period had been waiting longer than the window without
-- reaching the portal (its time plus the window, whether it arrived later or not yet); the
-- receipt itself when the period holds no change at all (nothing known to have synced); null
-- when every change arrived in time. A period that has ended counts the dossier synced when the
-- moment is null; one that runs, also when the moment is not before the data watermark (a
-- change still inside its window is pending, not failed). The counts and the drill-down read
-- this moment and nothing else.
checked_changes as (
    select
        s.dossier_id,
        s.stepped_at,
        s.status_code,
        s.loaded_at,
        date_diff(
            'second',
            s.stepped_at,
            list_min(list_transform(
                list_filter(d.status_syncs, lambda x: x.status = s.status_code and x.synced_at >= s.stepped_at),
                lambda x: x.synced_at
            ))
        ) / 3600.0 as delay_hours,
        date_trunc('month', s.stepped_at) = date_trunc('month', d.received_at) as in_receipt_month,
        date_trunc('quarter', s.stepped_at) = date_trunc('quarter', d.received_at) as in_receipt_quarter,
        date_trunc('year', s.stepped_at) = date_trunc('year', d.received_at) as in_receipt_year,
        w.window_month,
        w.window_quarter,
        w.window_year
    from step_records as s
    inner join dossiers as d on d.dossier_id = s.dossier_id
    left join windows as w on w.month = cast(date_trunc('month', d.received_at) as date)
),

step_summary as (
    select
        dossier_id,
        min(stepped_at) as first_status_change_at,
        max(stepped_at) as last_status_change_at,
        -- informative: the first change later than SPEC's default window of 24 hours, or not
        -- arrived at all
        min(stepped_at) filter (where delay_hours > 24 or delay_hours is null) as first_late_sync_change_at,
        max(delay_hours) filter (where in_receipt_month) as sync_delay_hours_in_receipt_month,
        max(delay_hours) filter (where in_receipt_quarter) as sync_delay_hours_in_receipt_quarter,
        max(delay_hours) filter (where in_receipt_year) as sync_delay_hours_in_receipt_year,
        min(stepped_at) filter (where in_receipt_month and delay_hours is null) as sync_first_unarrived_at_in_receipt_month,
        min(stepped_at) filter (where in_receipt_quarter and delay_hours is null) as sync_first_unarrived_at_in_receipt_quarter,
        min(stepped_at) filter (where in_receipt_year and delay_hours is null) as sync_first_unarrived_at_in_receipt_year,
        -- DOSSIER_SYNC's verdict: the changes in each receipt period, and the first that did not
        -- reach the portal within the window (late, or not at all)
        count(*) filter (where in_receipt_month) as sync_changes_in_receipt_month,
        count(*) filter (where in_receipt_quarter) as sync_changes_in_receipt_quarter,
        count(*) filter (where in_receipt_year) as sync_changes_in_receipt_year,
        min(stepped_at) filter (where in_receipt_month and not coalesce(delay_hours <= window_month, false))
            as sync_failing_change_at_month,
        min(stepped_at) filter (where in_receipt_quarter and not coalesce(delay_hours <= window_quarter, false))
            as sync_failing_change_at_quarter,
        min(stepped_at) filter (where in_receipt_year and not coalesce(delay_hours <= window_year, false))
            as sync_failing_change_at_year,
        -- Processing stopped (status 8) carries no date of its own; its step does.
        min(stepped_at) filter (where status_code = '8') as stopped_at,
        max(loaded_at) as loaded_at,
        min(loaded_at) as first_loaded_at
    from checked_changes
    group by dossier_id
),

-- Without NgayHenTra the procedure's statutory time limit applies, in working days. The time
-- waiting for the applicant's supplement is not counted (SPEC §4): with one supplement, the
-- working days from its request to its receipt are added (the portal moves NgayHenTra the
-- same way, NgayHenTraMoi, when the supplement arrives). `due_before_at` is the due time
-- before any wait, `due_at` after the first supplement's wait once it was received.
statutory_due as (
    select
        d.dossier_id,
        due_day.calendar_date + (d.received_at - date_trunc('day', d.received_at)) as due_before_at,
        extended_day.calendar_date + (d.received_at - date_trunc('day', d.received_at)) as due_at
    from dossiers as d
    -- the catalogue's version in force on the day of receipt
    inner join procedures as p
        on p.procedure_code = d.procedure_code
        and p.valid_from <= cast(d.received_at as date)
        and (p.valid_to is null or p.valid_to > cast(d.received_at as date))
    inner join calendar as received_day on received_day.calendar_date = cast(d.received_at as date)
    left join calendar as asked_day on asked_day.calendar_date = cast(d.supplement_requested_at as date)
    left join calendar as answered_day on answered_day.calendar_date = cast(d.supplement_answered_at as date)
    inner join working_days as due_day
        on due_day.working_day_number = received_day.working_day_number + p.statutory_working_days
    inner join working_days as extended_day
        on extended_day.working_day_number = received_day.working_day_number + p.statutory_working_days
            + case when d.supplement_count >= 1
                then greatest(coalesce(answered_day.working_day_number - asked_day.working_day_number, 0), 0)
                else 0 end
    where d.due_at is null and d.received_at is not null
),

ended as (
    select
        d.*,
        s.* exclude (dossier_id, loaded_at, first_loaded_at),
        s.loaded_at as steps_loaded_at,
        s.first_loaded_at as steps_first_loaded_at,
        -- The first of processed, result returned, stopped or refused.
        least(d.processed_at, d.returned_at, s.stopped_at, d.refused_at) as finished_at
    from dossiers as d
    left join step_summary as s using (dossier_id)
),

-- ON_TIME_HANDLING's one verdict (SPEC §4), as a moment: `late_since`, from which the dossier
-- counts as late for any judging moment T (a period's end, or the data watermark while the
-- period runs): late at T when late_since < T, on time otherwise (also when null: never late).
-- It is the first of
--   * its deadline: the due time before any supplement (the first supplement's
--     NgayHenTraTruoc, else NgayHenTra, else the statutory due) when no supplement was asked or
--     the request came after it; while the first supplement is awaited the clock stops (no
--     deadline); once it arrived, the due time after the wait (NgayHenTraMoi, else NgayHenTra,
--     else the statutory due extended by the wait);
--   * the second supplement request (more than one makes the dossier late from then on);
-- and is null when handling ended on or before that moment (done on time), for a withdrawn
-- dossier, and for a dossier with no due time at all (no NgayHenTra and its procedure not in
-- the catalogue: on time, listed by the warning test dossiers_without_due_time).
-- So a verdict never depends on what happened after the judging moment: a supplement asked in
-- November does not change October's.
judged as (
    select
        * exclude (deadline, late_from),
        case
            when status_code = '7' then null
            when finished_at is not null and (late_from is null or finished_at <= late_from) then null
            else late_from
        end as late_since
    from (
        select
            *,
            case
                when supplement_count > 1
                    then least(deadline, coalesce(second_supplement_requested_at, supplement_requested_at, received_at))
                else deadline
            end as late_from
        from (
            select
                e.*,
                sd.due_at as statutory_due_at,
                case
                    when e.supplement_count = 0 or e.supplement_requested_at is null
                        then coalesce(e.supplement_due_before, e.due_at, sd.due_before_at)
                    when e.supplement_requested_at >= coalesce(e.supplement_due_before, e.due_at, sd.due_before_at)
                        then coalesce(e.supplement_due_before, e.due_at, sd.due_before_at)
                    when e.supplement_answered_at is null then null
                    else coalesce(e.supplement_due_after, e.due_at, sd.due_at)
                end as deadline
            from ended as e
            left join statutory_due as sd using (dossier_id)
        )
    )
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
    -- an absent channel (KenhThucHien) is not online (docs/methodology.md, absent values)
    coalesce(e.channel = 'online', false) as is_online,
    e.status_code,
    e.status,
    e.status_code = '7' as is_withdrawn,

    -- times
    e.submitted_at,
    e.received_at,
    coalesce(e.due_at, e.statutory_due_at) as due_at,
    case when e.due_at is not null then 'portal' when e.statutory_due_at is not null then 'statutory' end as due_source,
    e.finished_at,
    case e.finished_at
        when e.processed_at then 'processed'
        when e.returned_at then 'returned'
        when e.stopped_at then 'stopped'
        when e.refused_at then 'refused'
    end as finish_kind,
    -- the months the index attributes the dossier to (the per-month models filter and group
    -- on them: truncating 10 M times at every build cost more than storing two dates)
    cast(date_trunc('month', e.received_at) as date) as received_month,
    cast(date_trunc('month', e.finished_at) as date) as finished_month,

    -- handling
    e.supplement_count,
    fin_day.working_day_number - rec_day.working_day_number as handling_working_days,
    -- the moment from which it counts as late (see `judged`), its month, and the verdict once
    -- handling ended
    e.late_since,
    cast(date_trunc('month', e.late_since) as date) as late_month,
    case when e.finished_at is not null then e.late_since is not null end as is_late,

    -- fees and payment
    e.has_fee_list,
    e.fee_total_vnd,
    e.fee_total_vnd > 0 as has_financial_obligation,
    -- neither the payments feed nor the dossier's flag says paid: not paid online
    coalesce(pay.has_paid_payment, e.is_paid_online, false) as is_paid_online,
    case when pay.dossier_id is not null then 'payments' when e.is_paid_online is not null then 'dossier' end as paid_online_source,

    -- results and digitisation
    e.has_electronic_result,
    p.is_result_paper,
    p.has_replaceable_components as is_procedure_replaceable,
    e.is_digitised,
    e.has_reused_component,
    e.has_store_component,
    e.uses_population_data,

    -- sync and rating
    e.first_status_change_at,
    e.last_status_change_at,
    e.first_late_sync_change_at,
    e.sync_delay_hours_in_receipt_month,
    e.sync_delay_hours_in_receipt_quarter,
    e.sync_delay_hours_in_receipt_year,
    e.sync_first_unarrived_at_in_receipt_month,
    e.sync_first_unarrived_at_in_receipt_quarter,
    e.sync_first_unarrived_at_in_receipt_year,
    -- DOSSIER_SYNC's verdict per receipt period type (see checked_changes), and the windows
    -- applied (of the methodology in force for the receipt month, quarter and year)
    w.window_month as sync_window_hours_month,
    w.window_quarter as sync_window_hours_quarter,
    w.window_year as sync_window_hours_year,
    case
        when e.received_at is null then null
        when coalesce(e.sync_changes_in_receipt_month, 0) = 0 then e.received_at
        else e.sync_failing_change_at_month + to_microseconds(cast(w.window_month * 3600000000 as bigint))
    end as sync_fails_at_month,
    case
        when e.received_at is null then null
        when coalesce(e.sync_changes_in_receipt_quarter, 0) = 0 then e.received_at
        else e.sync_failing_change_at_quarter + to_microseconds(cast(w.window_quarter * 3600000000 as bigint))
    end as sync_fails_at_quarter,
    case
        when e.received_at is null then null
        when coalesce(e.sync_changes_in_receipt_year, 0) = 0 then e.received_at
        else e.sync_failing_change_at_year + to_microseconds(cast(w.window_year * 3600000000 as bigint))
    end as sync_fails_at_year,
    r.rating,
    coalesce(r.has_complaint, false) as has_complaint,
    -- DOSSIER_RECEIVING_SATISFACTION's part that does not depend on time (lateness does)
    coalesce(r.rating = 'unsatisfied', false) or coalesce(r.has_complaint, false) as is_rated_unsatisfied,

    e.synced_at,
    e.lake_file,
    e.lake_row,

    -- landing times of the inputs behind the row (the incremental build's watermarks)
    e.loaded_at as version_loaded_at,
    e.steps_loaded_at,
    -- the first landing of its steps: a step without a time is in the month it landed in
    e.steps_first_loaded_at,
    r.loaded_at as rating_loaded_at,
    pay.loaded_at as payment_loaded_at,
    p.loaded_at as catalogue_loaded_at,
    (select max(loaded_at) from {{ ref('stg_calendar__days') }}) as calendar_loaded_at,
    -- when this row was computed (the index's per-month counts rebuild the months it touches):
    -- a watermark, so it never goes back, even when the clock does (an NTP step, a VM restored):
    -- at least a millisecond after every row kept from earlier builds
    {% if is_incremental() %}
    greatest(
        cast(get_current_timestamp() as timestamp),
        (select max(built_at) from {{ this }}) + interval 1 millisecond
    ) as built_at
    {% else %}
    cast(get_current_timestamp() as timestamp) as built_at
    {% endif %}
from judged as e
left join ratings as r using (dossier_id)
left join payments as pay using (dossier_id)
-- the catalogue's version in force on the day of receipt (the current one without a receipt)
left join procedures as p
    on p.procedure_code = e.procedure_code
    and case
        when e.received_at is null then p.is_current
        else p.valid_from <= cast(e.received_at as date) and (p.valid_to is null or p.valid_to > cast(e.received_at as date))
    end
left join windows as w on w.month = cast(date_trunc('month', e.received_at) as date)
left join calendar as rec_day on rec_day.calendar_date = cast(e.received_at as date)
left join calendar as fin_day on fin_day.calendar_date = cast(e.finished_at as date)
