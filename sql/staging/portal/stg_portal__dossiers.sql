{{ config(materialized='incremental', unique_key='dossier_id', tags=['staging'],
    pre_hook="{% if is_incremental() %}SET VARIABLE stg_portal__dossiers_since = (SELECT coalesce(max(loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}") }}
-- One row per dossier (dossier_id): its current version, typed and decoded, and every status
-- the portal received for it, with when (each version's TrangThaiHoSo and ThoiDiemDongBo).
--
-- The portal re-sends a dossier on every change, late and out of order: a version synced late
-- can arrive (ThoiDiemDongBo) after a newer one, so arrival order alone would make statuses go
-- backwards. Versions are ordered by the state they describe: the latest of their own event
-- times (submitted, received, supplement asked and answered, processed, returned, refused),
-- then whether the online payment had been made, then the status's place in the workflow,
-- and only then by arrival.
--
-- All versions are read once, on narrow columns: the winner per dossier (its lake file, by
-- hash, and row) and the list of (status, receive time) of all versions (DOSSIER_SYNC matches
-- each processing step with the first receipt of its status at or after it). Only the winners' full rows are then read and decoded; the JSON
-- lists are decoded here into the attributes the index counts and not kept as text (the
-- record stays in the lake: `lake_file`, `lake_row`, and the versions view).
--
-- Incremental: only versions landed since the last build are read. They compete with the kept
-- current version of their dossier and add their receive times to its list; a dossier whose
-- current version did not change keeps its row, with the list updated.

with

source as not materialized (
    select * from {{ source('portal', 'dossiers') }}
    {% if is_incremental() %}
    -- Landing is ordered (one writer per dataset, each landing stamped after the previous one
    -- committed), so everything up to the newest loaded_at already kept was seen by an
    -- earlier build. A stamp is shared by a whole chunk of a landing: reading equal stamps
    -- again would redo that chunk at every build.
    where _ingested_at > getvariable('stg_portal__dossiers_since')
    {% endif %}
),

-- The ordering key of each version, on narrow columns, packed into one HUGEINT so that
-- choosing the winner is a max over fixed-size values: from the top, the state time (seconds
-- since 0001-01-01, 36 bits), online payment (1 bit), workflow rank (3 bits), the portal's
-- receive time (seconds, 36 bits) and the landing time (milliseconds, 50 bits). NULL times
-- count as 0001-01-01 (lowest), and so do placeholder times, before 2000 or from 2050 on (vars
-- earliest_real_time, latest_real_time; the
-- bounds of records_with_times_out_of_range, which lists them): a `99991231…` sentinel would
-- overflow the key's 36 bits and stop the build, and would make its version win over every
-- later one, its correction included. The record keeps its times as they came. The lake file
-- (its hash) and row locate the winner.
versions as (
    select
        MaHoSo as dossier_id,
        (hash(filename)::uhugeint << 64) + file_row_number::uhugeint as locator,
        ((epoch_ms(coalesce(greatest(
            case when NgayNopHoSo >= timestamp '{{ var('earliest_real_time') }}' and NgayNopHoSo < timestamp '{{ var('latest_real_time') }}' then NgayNopHoSo end,
            case when NgayTiepNhan >= timestamp '{{ var('earliest_real_time') }}' and NgayTiepNhan < timestamp '{{ var('latest_real_time') }}' then NgayTiepNhan end,
            case when NgayKetThucXuLy >= timestamp '{{ var('earliest_real_time') }}' and NgayKetThucXuLy < timestamp '{{ var('latest_real_time') }}' then NgayKetThucXuLy end,
            case when NgayTra >= timestamp '{{ var('earliest_real_time') }}' and NgayTra < timestamp '{{ var('latest_real_time') }}' then NgayTra end,
            case when NgayTuChoi >= timestamp '{{ var('earliest_real_time') }}' and NgayTuChoi < timestamp '{{ var('latest_real_time') }}' then NgayTuChoi end,
            -- a date that does not read as yyyymmddHHMMSS counts for nothing (the build does not
            -- stop on it; the data test dossiers_with_unreadable_supplement_dates lists them)
            case when DanhSachHoSoBoSung is not null and DanhSachHoSoBoSung <> '[]' then try_strptime(
                nullif(list_max(list_transform(
                    from_json(DanhSachHoSoBoSung, '[{"NgayBoSung":"VARCHAR","NgayTiepNhanBoSung":"VARCHAR"}]'),
                    -- each date on its own, placeholders left out (compared as yyyymmdd… text)
                    lambda s: greatest(
                        case when s.NgayBoSung >= replace('{{ var('earliest_real_time') }}', '-', '') and s.NgayBoSung < replace('{{ var('latest_real_time') }}', '-', '') then s.NgayBoSung end,
                        case when s.NgayTiepNhanBoSung >= replace('{{ var('earliest_real_time') }}', '-', '') and s.NgayTiepNhanBoSung < replace('{{ var('latest_real_time') }}', '-', '') then s.NgayTiepNhanBoSung end
                    )
                )), ''),
                '%Y%m%d%H%M%S'
            ) end
        ), timestamp '0001-01-01')) // 1000 + 62135596800)::hugeint << 90)
        + (coalesce(DuocThanhToanTrucTuyen = 1, false)::int::hugeint << 89)
        + ((case TrangThaiHoSo
            when '1' then 1
            when '2' then 2
            when '4' then 3
            when '5' then 4
            when '6' then 5
            when '10' then 7
            else 6
        end)::hugeint << 86)
        + ((epoch_ms(coalesce(
            case when ThoiDiemDongBo >= timestamp '{{ var('earliest_real_time') }}' and ThoiDiemDongBo < timestamp '{{ var('latest_real_time') }}' then ThoiDiemDongBo end,
            timestamp '0001-01-01'
        )) // 1000 + 62135596800)::hugeint << 50)
        + (epoch_ms(_ingested_at) + 62135596800000)::hugeint as version_key,
        _ingested_at as loaded_at,
        -- the status this version carried and when the portal received it
        case when ThoiDiemDongBo is not null
            then struct_pack(status := TrangThaiHoSo, synced_at := ThoiDiemDongBo)
        end as status_sync
    from source
),

{% if is_incremental() %}
-- The kept rows of the dossiers with new versions, read once: found on the key column alone,
-- then fetched by row id (filtering every column of the table by the key decompressed all of
-- them for millions of rows to keep thousands).
new_ids as materialized (
    select distinct MaHoSo as dossier_id from source
),

kept_rows as materialized (
    select * from {{ this }}
    where rowid in (
        select rowid from {{ this }}
        where dossier_id in (select dossier_id from new_ids)
    )
),
{% endif %}

candidates as (
    select * from versions
    {% if is_incremental() %}
    union all by name
    select
        t.dossier_id,
        (hash(t.lake_file)::uhugeint << 64) + t.lake_row::uhugeint as locator,
        t.version_key,
        t.version_loaded_at as loaded_at,
        unnest(t.status_syncs) as status_sync
    from kept_rows as t
    {% endif %}
),

winners as (
    select
        dossier_id,
        arg_max(locator, version_key) as locator,
        max(version_key) as version_key,
        -- every (status, receive time) of every version (a resent version may repeat one: the
        -- match takes the first at or after a step, which a repeat cannot change)
        list(status_sync) filter (where status_sync is not null) as status_syncs,
        max(loaded_at) as loaded_at
    from candidates
    group by dossier_id
),

{% if is_incremental() %}
-- Kept current versions that stay current: their rows are kept, with the receive times moved.
kept as (
    select
        t.* exclude (status_syncs, loaded_at),
        w.* exclude (dossier_id, locator, version_key)
    from kept_rows as t
    inner join winners as w
        on w.dossier_id = t.dossier_id
        and w.locator = (hash(t.lake_file)::uhugeint << 64) + t.lake_row::uhugeint
),
{% endif %}

-- Full rows of the winners that are new versions.
chosen as (
    select s.*, w.* exclude (dossier_id, locator)
    from source as s
    inner join winners as w
        on w.locator = (hash(s.filename)::uhugeint << 64) + s.file_row_number::uhugeint
    {% if is_incremental() %}
    where w.dossier_id not in (select dossier_id from kept)
    {% endif %}
),

renamed as (
    select
        -- ids
        MaHoSo as dossier_id,
        MaTTHC as procedure_code,
        MaLinhVuc as field_code,
        DonViXuLy as unit_id,

        -- applicant (the applicant's name and papers stay in the lake record)
        case LoaiDoiTuong
            when '1' then 'citizen'
            when '2' then 'business'
            when '3' then 'state_agency'
            else 'other'
        end as applicant_type,

        -- channel and status
        case KenhThucHien
            when '1' then 'in_person'
            when '2' then 'online'
            when '3' then 'postal'
        end as channel,
        TrangThaiHoSo as status_code,
        case TrangThaiHoSo
            when '1' then 'registered'
            when '2' then 'received'
            when '3' then 'not_accepted'
            when '4' then 'processing'
            when '5' then 'supplement_requested'
            when '6' then 'financial_obligation_requested'
            when '7' then 'withdrawn'
            when '8' then 'processing_stopped'
            when '9' then 'processed'
            when '10' then 'result_returned'
        end as status,

        -- times (Vietnamese wall clock)
        NgayNopHoSo as submitted_at,
        NgayTiepNhan as received_at,
        NgayHenTra as due_at,
        NgayKetThucXuLy as processed_at,
        NgayTra as returned_at,
        NgayTuChoi as refused_at,
        ThoiDiemDongBo as synced_at,

        -- flags
        -- an absent flag is not digitised (docs/methodology.md, absent values)
        coalesce(HoSoCoThanhPhanSoHoa = 1, false) as is_digitised,
        DuocThanhToanTrucTuyen = 1 as is_paid_online,

        -- the JSON lists, decoded (each parsed once, in `chosen`)
        cast(coalesce(json_array_length(DanhSachHoSoBoSung), 0) as integer) as supplement_count,
        -- the first supplement request, when the portal received the supplement, and the due
        -- time before and after it (the time waiting for the applicant is not counted: SPEC
        -- §4); the second request, which makes the dossier late from that moment
        try_strptime(nullif(supplements[1].NgayBoSung, ''), '%Y%m%d%H%M%S') as supplement_requested_at,
        try_strptime(nullif(supplements[1].NgayTiepNhanBoSung, ''), '%Y%m%d%H%M%S') as supplement_answered_at,
        try_strptime(nullif(supplements[1].NgayHenTraTruoc, ''), '%Y%m%d%H%M%S') as supplement_due_before,
        try_strptime(nullif(supplements[1].NgayHenTraMoi, ''), '%Y%m%d%H%M%S') as supplement_due_after,
        try_strptime(nullif(supplements[2].NgayBoSung, ''), '%Y%m%d%H%M%S') as second_supplement_requested_at,
        coalesce(list_bool_or(list_transform(
            supplements,
            lambda s: (nullif(s.NgayBoSung, '') is not null and try_strptime(s.NgayBoSung, '%Y%m%d%H%M%S') is null)
                or (nullif(s.NgayTiepNhanBoSung, '') is not null and try_strptime(s.NgayTiepNhanBoSung, '%Y%m%d%H%M%S') is null)
        )), false) as has_unreadable_supplement_date,
        coalesce(len(fees), 0) > 0 as has_fee_list,
        coalesce(list_sum(list_transform(fees, lambda f: coalesce(f.Gia, 0))), 0) as fee_total_vnd,
        coalesce(list_bool_or(list_transform(
            results, lambda r: coalesce(r.DuongDanTepTinKetQua, '') <> ''
        )), false) as has_electronic_result,
        coalesce(list_bool_or(list_transform(
            components, lambda c: coalesce(c.DuocTaiSuDung, 0) in (1, 2)
        )), false) as has_reused_component,
        coalesce(list_bool_or(list_transform(
            components, lambda c: coalesce(c.DuocLayTuKhoDMQG, 0) = 1
        )), false) as has_store_component,
        coalesce(list_bool_or(list_transform(
            national_db_links, lambda l: l.MaCSDL = 'CSDLQGDC'
        )), false) as uses_population_data,

        -- every status the portal received for the dossier, and when
        status_syncs,

        -- ordering and lineage: the key's top bits give back the state time and workflow rank
        make_timestamp(((version_key >> 90)::bigint - 62135596800) * 1000000) as state_at,
        ((version_key >> 86) & 7)::integer as workflow_rank,
        version_key,
        filename as lake_file,
        file_row_number as lake_row,
        _ingested_at as version_loaded_at,
        loaded_at
    from (
        select
            *,
            from_json(DanhSachLePhi, '[{"Gia":"BIGINT"}]') as fees,
            from_json(DanhSachGiayToKetQua, '[{"DuongDanTepTinKetQua":"VARCHAR"}]') as results,
            from_json(TaiLieuNop, '[{"DuocTaiSuDung":"INTEGER","DuocLayTuKhoDMQG":"INTEGER"}]') as components,
            from_json(DSKetNoiCSDL, '[{"MaCSDL":"VARCHAR"}]') as national_db_links,
            case when DanhSachHoSoBoSung is not null and DanhSachHoSoBoSung <> '[]' then from_json(
                DanhSachHoSoBoSung,
                '[{"NgayBoSung":"VARCHAR","NgayTiepNhanBoSung":"VARCHAR","NgayHenTraTruoc":"VARCHAR","NgayHenTraMoi":"VARCHAR"}]'
            ) end as supplements
        from chosen
    )
)

select * from renamed
{% if is_incremental() %}
union all by name
select * from kept
{% endif %}
