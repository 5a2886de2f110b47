{{ config(materialized='view', tags=['drilldown']) }}
-- One row per late dossier (dossier_id): when it was due and finished, how late in working
-- days, and the processing step that was open when it went past due, with the officer who
-- held it. For inspectors behind ON_TIME_HANDLING; holds officer names, so it is never
-- published (publication reads mart_ models only).

with

dossiers as (
    select * from {{ ref('fct_dossiers') }}
),

steps as (
    select * from {{ ref('stg_portal__dossier_steps') }}
),

calendar as (
    select * from {{ ref('dim_calendar') }}
),

late as (
    select * from dossiers where is_late
),

-- The step during which it became late (fct_dossiers.late_since): the first step after that.
-- Two steps at the same second (a clerk's batch, a step landed twice with different officers)
-- are told apart by status, officer, department and action, so the officer named is the same
-- at every build, whatever order the rows were read in.
blamed_step as (
    select
        l.dossier_id,
        s.officer_name,
        s.officer_title,
        s.department,
        s.action,
        s.status_code as step_status_code,
        s.stepped_at
    from late as l
    inner join steps as s on s.dossier_id = l.dossier_id and s.stepped_at > l.late_since
    qualify row_number() over (
        partition by l.dossier_id
        order by s.stepped_at, s.status_code, s.officer_name, s.officer_title, s.department, s.action
    ) = 1
)

select
    l.dossier_id,
    l.unit_id,
    l.procedure_code,
    strftime(l.finished_at, '%Y-%m') as finished_month,
    l.received_at,
    l.due_at,
    l.late_since,
    l.finished_at,
    l.supplement_count,
    fin.working_day_number - due.working_day_number as working_days_late,
    b.officer_name,
    b.officer_title,
    b.department,
    b.action,
    b.step_status_code,
    b.stepped_at
from late as l
left join blamed_step as b using (dossier_id)
left join calendar as due on due.calendar_date = cast(l.late_since as date)
left join calendar as fin on fin.calendar_date = cast(l.finished_at as date)
