-- Demo copy of the MUVA production schema: 42 tables in public, 49 foreign keys.
-- Tables follow the production migration order (levels 0-4, then code_embeddings);
-- besides the level edges, ten tenant-scoped tables carry their own tenant_id key.

CREATE EXTENSION IF NOT EXISTS vector;

-- Types ---------------------------------------------------------------------

CREATE TYPE reservation_status AS ENUM
    ('pending', 'confirmed', 'checked_in', 'checked_out', 'cancelled', 'no_show');
CREATE TYPE reservation_flag AS ENUM
    ('vip', 'late_arrival', 'early_check_in', 'pet', 'needs_invoice', 'sire_pending');
CREATE TYPE message_direction AS ENUM ('inbound', 'outbound');
CREATE TYPE staff_role AS ENUM ('owner', 'admin', 'staff', 'viewer');
CREATE TYPE sync_status AS ENUM ('queued', 'running', 'succeeded', 'failed');

-- Functions -----------------------------------------------------------------

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- The app sets app.tenant_id per request; unset means "no tenant", not an error.
CREATE FUNCTION current_tenant_id() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('app.tenant_id', true), '')::uuid
$$;

-- Level 0: the tenant root and reference data ------------------------------

CREATE TABLE tenant_registry (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subdomain text NOT NULL,
    slug text NOT NULL,
    business_name text NOT NULL,
    nit text,
    tenant_type text NOT NULL DEFAULT 'hotel'
        CHECK (tenant_type IN ('hotel', 'hostel', 'apartments', 'tour_operator')),
    subscription_tier text NOT NULL DEFAULT 'basic',
    is_active boolean NOT NULL DEFAULT true,
    features jsonb NOT NULL DEFAULT '{}'::jsonb,
    logo_url text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_registry_subdomain_key UNIQUE (subdomain)
);
ALTER TABLE tenant_registry ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_self ON tenant_registry USING (id = current_tenant_id());

CREATE TABLE sire_countries (
    code text PRIMARY KEY CHECK (code ~ '^[A-Z]{2}$'),
    sire_code integer NOT NULL UNIQUE,
    name_es text NOT NULL,
    name_en text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE sire_countries ENABLE ROW LEVEL SECURITY;
CREATE POLICY reference_read ON sire_countries FOR SELECT USING (true);

CREATE TABLE sire_document_types (
    code text PRIMARY KEY,
    name text NOT NULL,
    description text,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE sire_document_types ENABLE ROW LEVEL SECURITY;
CREATE POLICY reference_read ON sire_document_types FOR SELECT USING (true);

CREATE TABLE meal_plans (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code text NOT NULL UNIQUE,
    name text NOT NULL,
    description text,
    includes text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE meal_plans ENABLE ROW LEVEL SECURITY;
CREATE POLICY reference_read ON meal_plans FOR SELECT USING (true);

CREATE TABLE room_types (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code text NOT NULL UNIQUE,
    name text NOT NULL,
    max_occupancy smallint NOT NULL CHECK (max_occupancy > 0),
    bed_configuration jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE room_types ENABLE ROW LEVEL SECURITY;
CREATE POLICY reference_read ON room_types FOR SELECT USING (true);

CREATE TABLE accommodation_types (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code text NOT NULL UNIQUE,
    name text NOT NULL,
    description text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE accommodation_types ENABLE ROW LEVEL SECURITY;
CREATE POLICY reference_read ON accommodation_types FOR SELECT USING (true);

CREATE TABLE sire_content (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug text NOT NULL UNIQUE,
    section text NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    keywords text[] NOT NULL DEFAULT '{}',
    search_vector tsvector
        GENERATED ALWAYS AS (to_tsvector('spanish', title || ' ' || body)) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sire_content_search_vector_idx ON sire_content USING gin (search_vector);
ALTER TABLE sire_content ENABLE ROW LEVEL SECURITY;
CREATE POLICY reference_read ON sire_content FOR SELECT USING (true);

-- DIVIPOLA municipality code, as SIRE reports use it.
CREATE TABLE sire_cities (
    code integer PRIMARY KEY,
    name text NOT NULL,
    department text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE sire_cities ENABLE ROW LEVEL SECURITY;
CREATE POLICY reference_read ON sire_cities FOR SELECT USING (true);

-- Level 1 -------------------------------------------------------------------

CREATE TABLE staff_users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    email text NOT NULL,
    full_name text NOT NULL,
    role staff_role NOT NULL DEFAULT 'staff',
    password_hash text NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    last_login_at timestamptz,
    preferences jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT staff_users_tenant_email_key UNIQUE (tenant_id, email)
);
ALTER TABLE staff_users ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON staff_users USING (tenant_id = current_tenant_id());

CREATE TABLE settings (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    key text NOT NULL,
    value jsonb NOT NULL,
    description text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT settings_tenant_key_key UNIQUE (tenant_id, key)
);
ALTER TABLE settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON settings USING (tenant_id = current_tenant_id());

CREATE TABLE accommodations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    name text NOT NULL,
    accommodation_type text NOT NULL DEFAULT 'hotel',
    description text,
    address text,
    city_code integer,
    latitude numeric(9, 6),
    longitude numeric(9, 6),
    amenities text[] NOT NULL DEFAULT '{}',
    policies jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accommodations_tenant_id_idx ON accommodations (tenant_id);
ALTER TABLE accommodations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON accommodations USING (tenant_id = current_tenant_id());

CREATE TABLE guest_conversations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    guest_name text,
    guest_phone text,
    channel text NOT NULL CHECK (channel IN ('web', 'whatsapp', 'email')),
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'archived')),
    last_message_at timestamptz,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX guest_conversations_tenant_recent_idx
    ON guest_conversations (tenant_id, last_message_at DESC);
ALTER TABLE guest_conversations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON guest_conversations USING (tenant_id = current_tenant_id());

CREATE TABLE prospective_sessions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    session_token text NOT NULL UNIQUE,
    visitor_ip inet,
    browser text,
    landing_page text,
    utm jsonb NOT NULL DEFAULT '{}'::jsonb,
    travel_intent jsonb,
    converted boolean NOT NULL DEFAULT false,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX prospective_sessions_tenant_id_idx ON prospective_sessions (tenant_id);
ALTER TABLE prospective_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON prospective_sessions USING (tenant_id = current_tenant_id());

CREATE TABLE whatsapp_business_accounts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    waba_id text NOT NULL UNIQUE,
    display_name text NOT NULL,
    verified boolean NOT NULL DEFAULT false,
    webhook_config jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX whatsapp_business_accounts_tenant_id_idx ON whatsapp_business_accounts (tenant_id);
ALTER TABLE whatsapp_business_accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON whatsapp_business_accounts
    USING (tenant_id = current_tenant_id());

CREATE TABLE compliance_submissions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    reservation_reference text NOT NULL,
    submission_type text NOT NULL CHECK (submission_type IN ('sire', 'tra')),
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'submitted', 'accepted', 'rejected')),
    guests_count smallint NOT NULL DEFAULT 1,
    payload jsonb NOT NULL,
    response jsonb,
    submitted_at timestamptz,
    error_message text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX compliance_submissions_tenant_status_idx ON compliance_submissions (tenant_id, status);
ALTER TABLE compliance_submissions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON compliance_submissions USING (tenant_id = current_tenant_id());

CREATE TABLE tenant_compliance_credentials (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    provider text NOT NULL CHECK (provider IN ('sire', 'tra')),
    username text NOT NULL,
    encrypted_secret bytea NOT NULL,
    nonce bytea NOT NULL,
    key_version smallint NOT NULL DEFAULT 1,
    rotated_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_compliance_credentials_tenant_id_idx
    ON tenant_compliance_credentials (tenant_id);
ALTER TABLE tenant_compliance_credentials ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_compliance_credentials
    USING (tenant_id = current_tenant_id());

CREATE TABLE motopress_accommodations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    motopress_id bigint NOT NULL,
    title text NOT NULL,
    status text NOT NULL DEFAULT 'publish',
    site_url text,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_synced_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT motopress_accommodations_tenant_motopress_key UNIQUE (tenant_id, motopress_id)
);
ALTER TABLE motopress_accommodations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON motopress_accommodations USING (tenant_id = current_tenant_id());

CREATE TABLE airbnb_accommodations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    listing_id text NOT NULL UNIQUE,
    title text NOT NULL,
    ical_url text,
    sync_enabled boolean NOT NULL DEFAULT true,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX airbnb_accommodations_tenant_id_idx ON airbnb_accommodations (tenant_id);
ALTER TABLE airbnb_accommodations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON airbnb_accommodations USING (tenant_id = current_tenant_id());

-- Tourism content shared by all tenants; a NULL country means "San Andrés, local".
CREATE TABLE muva_content (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    country_code text REFERENCES sire_countries (code) ON DELETE SET NULL,
    source_file text NOT NULL,
    chunk_index integer NOT NULL,
    category text NOT NULL,
    subcategory text,
    title text NOT NULL,
    content text NOT NULL,
    tags text[] NOT NULL DEFAULT '{}',
    business_info jsonb,
    search_vector tsvector,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT muva_content_source_chunk_key UNIQUE (source_file, chunk_index)
);
CREATE INDEX muva_content_country_code_idx ON muva_content (country_code);
CREATE INDEX muva_content_search_vector_idx ON muva_content USING gin (search_vector);
CREATE INDEX muva_content_business_info_idx ON muva_content USING gin (business_info jsonb_path_ops);
ALTER TABLE muva_content ENABLE ROW LEVEL SECURITY;
CREATE POLICY reference_read ON muva_content FOR SELECT USING (true);

CREATE TABLE airbnb_sync_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    status sync_status NOT NULL,
    listings_checked integer NOT NULL DEFAULT 0,
    events_imported integer NOT NULL DEFAULT 0,
    error_message text,
    details jsonb
);
CREATE INDEX airbnb_sync_log_tenant_started_idx ON airbnb_sync_log (tenant_id, started_at DESC);
ALTER TABLE airbnb_sync_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON airbnb_sync_log USING (tenant_id = current_tenant_id());

CREATE TABLE motopress_sync_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    sync_type text NOT NULL CHECK (sync_type IN ('full', 'incremental', 'webhook')),
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    status sync_status NOT NULL,
    records_processed integer NOT NULL DEFAULT 0,
    error_message text,
    details jsonb
);
CREATE INDEX motopress_sync_log_tenant_started_idx
    ON motopress_sync_log (tenant_id, started_at DESC);
ALTER TABLE motopress_sync_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON motopress_sync_log USING (tenant_id = current_tenant_id());

CREATE TABLE sync_status_log (
    id bigserial PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    source text NOT NULL CHECK (source IN ('airbnb', 'motopress', 'booking', 'manual')),
    status sync_status NOT NULL,
    message text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_status_log_tenant_id_idx ON sync_status_log (tenant_id);
ALTER TABLE sync_status_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sync_status_log USING (tenant_id = current_tenant_id());

CREATE TABLE calendar_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    source text NOT NULL CHECK (source IN ('airbnb', 'motopress', 'booking', 'manual')),
    external_uid text NOT NULL,
    summary text,
    start_date date NOT NULL,
    end_date date NOT NULL,
    is_blocked boolean NOT NULL DEFAULT false,
    raw jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT calendar_events_dates_check CHECK (end_date >= start_date),
    CONSTRAINT calendar_events_tenant_source_uid_key UNIQUE (tenant_id, source, external_uid)
);
CREATE INDEX calendar_events_start_date_idx ON calendar_events (start_date);
ALTER TABLE calendar_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON calendar_events USING (tenant_id = current_tenant_id());

CREATE TABLE hotels (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    name text NOT NULL,
    description text,
    star_rating smallint CHECK (star_rating BETWEEN 1 AND 5),
    address jsonb NOT NULL DEFAULT '{}'::jsonb,
    contact_email text,
    contact_phone text,
    check_in_time time NOT NULL DEFAULT '15:00',
    check_out_time time NOT NULL DEFAULT '12:00',
    images text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hotels_tenant_id_idx ON hotels (tenant_id);
ALTER TABLE hotels ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON hotels USING (tenant_id = current_tenant_id());

CREATE TABLE tenant_subdomain_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    old_subdomain text,
    new_subdomain text NOT NULL,
    changed_by text,
    reason text,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_subdomain_logs_tenant_id_idx ON tenant_subdomain_logs (tenant_id);
ALTER TABLE tenant_subdomain_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_subdomain_logs USING (tenant_id = current_tenant_id());

-- Level 2 -------------------------------------------------------------------

CREATE TABLE user_tenant_permissions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    staff_user_id uuid NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    role staff_role NOT NULL,
    permissions text[] NOT NULL DEFAULT '{}',
    is_active boolean NOT NULL DEFAULT true,
    granted_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_tenant_permissions_user_tenant_key UNIQUE (staff_user_id, tenant_id)
);
CREATE INDEX user_tenant_permissions_tenant_id_idx ON user_tenant_permissions (tenant_id);
ALTER TABLE user_tenant_permissions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON user_tenant_permissions USING (tenant_id = current_tenant_id());

CREATE TABLE accommodation_units (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    accommodation_id uuid NOT NULL REFERENCES accommodations (id) ON DELETE CASCADE,
    name text NOT NULL,
    unit_number text,
    room_type text,
    capacity smallint NOT NULL CHECK (capacity > 0),
    bed_configuration jsonb NOT NULL DEFAULT '{}'::jsonb,
    base_price numeric(12, 2) NOT NULL,
    currency char(3) NOT NULL DEFAULT 'COP',
    amenities text[] NOT NULL DEFAULT '{}',
    description text,
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accommodation_units_tenant_id_idx ON accommodation_units (tenant_id);
CREATE INDEX accommodation_units_accommodation_id_idx ON accommodation_units (accommodation_id);
ALTER TABLE accommodation_units ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON accommodation_units USING (tenant_id = current_tenant_id());

CREATE TABLE chat_messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES guest_conversations (id) ON DELETE CASCADE,
    sender text NOT NULL CHECK (sender IN ('guest', 'staff', 'system')),
    direction message_direction NOT NULL,
    content text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_messages_tenant_id_idx ON chat_messages (tenant_id);
CREATE INDEX chat_messages_conversation_created_idx ON chat_messages (conversation_id, created_at);
ALTER TABLE chat_messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON chat_messages USING (tenant_id = current_tenant_id());

CREATE TABLE prospective_messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    session_id uuid NOT NULL REFERENCES prospective_sessions (id) ON DELETE CASCADE,
    direction message_direction NOT NULL,
    content text NOT NULL,
    detected_intent text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX prospective_messages_tenant_id_idx ON prospective_messages (tenant_id);
CREATE INDEX prospective_messages_session_id_idx ON prospective_messages (session_id);
ALTER TABLE prospective_messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON prospective_messages USING (tenant_id = current_tenant_id());

CREATE TABLE whatsapp_phone_numbers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    business_account_id uuid NOT NULL
        REFERENCES whatsapp_business_accounts (id) ON DELETE CASCADE,
    phone_number text NOT NULL,
    meta_phone_number_id text NOT NULL,
    display_name text,
    quality_rating text,
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT whatsapp_phone_numbers_phone_number_key UNIQUE (phone_number)
);
CREATE INDEX whatsapp_phone_numbers_tenant_id_idx ON whatsapp_phone_numbers (tenant_id);
CREATE INDEX whatsapp_phone_numbers_business_account_id_idx
    ON whatsapp_phone_numbers (business_account_id);
ALTER TABLE whatsapp_phone_numbers ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON whatsapp_phone_numbers USING (tenant_id = current_tenant_id());

CREATE TABLE motopress_accommodation_units (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    motopress_accommodation_id uuid NOT NULL
        REFERENCES motopress_accommodations (id) ON DELETE CASCADE,
    motopress_unit_id bigint NOT NULL,
    title text NOT NULL,
    capacity smallint,
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT motopress_accommodation_units_parent_unit_key
        UNIQUE (motopress_accommodation_id, motopress_unit_id)
);
ALTER TABLE motopress_accommodation_units ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON motopress_accommodation_units USING (EXISTS (
    SELECT 1 FROM motopress_accommodations m
    WHERE m.id = motopress_accommodation_id AND m.tenant_id = current_tenant_id()));

CREATE TABLE airbnb_calendar_sync_status (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    airbnb_accommodation_id uuid NOT NULL UNIQUE
        REFERENCES airbnb_accommodations (id) ON DELETE CASCADE,
    last_synced_at timestamptz,
    last_status sync_status NOT NULL DEFAULT 'queued',
    events_count integer NOT NULL DEFAULT 0,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE airbnb_calendar_sync_status ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON airbnb_calendar_sync_status USING (EXISTS (
    SELECT 1 FROM airbnb_accommodations a
    WHERE a.id = airbnb_accommodation_id AND a.tenant_id = current_tenant_id()));

-- Level 3 -------------------------------------------------------------------

CREATE TABLE guest_reservations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    accommodation_unit_id uuid REFERENCES accommodation_units (id) ON DELETE SET NULL,
    conversation_id uuid REFERENCES guest_conversations (id) ON DELETE SET NULL,
    guest_name text NOT NULL,
    guest_email text,
    phone_last_4 text CHECK (phone_last_4 ~ '^[0-9]{4}$'),
    check_in date NOT NULL,
    check_out date NOT NULL,
    nights integer GENERATED ALWAYS AS (check_out - check_in) STORED,
    adults smallint NOT NULL DEFAULT 1,
    children smallint NOT NULL DEFAULT 0,
    status reservation_status NOT NULL DEFAULT 'pending',
    flags reservation_flag[] NOT NULL DEFAULT '{}',
    total_price numeric(12, 2),
    currency char(3) NOT NULL DEFAULT 'COP',
    document_type text,
    document_number text,
    nationality_code text,
    booking_source text,
    external_booking_id text,
    notes text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT guest_reservations_dates_check CHECK (check_out > check_in),
    -- Target of reservation_accommodations' composite key: a link cannot cross tenants.
    CONSTRAINT guest_reservations_id_tenant_key UNIQUE (id, tenant_id)
);
CREATE INDEX guest_reservations_tenant_check_in_idx ON guest_reservations (tenant_id, check_in);
CREATE INDEX guest_reservations_accommodation_unit_id_idx
    ON guest_reservations (accommodation_unit_id);
CREATE INDEX guest_reservations_conversation_id_idx ON guest_reservations (conversation_id);
CREATE INDEX guest_reservations_flags_idx ON guest_reservations USING gin (flags);
ALTER TABLE guest_reservations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON guest_reservations USING (tenant_id = current_tenant_id());

CREATE TABLE whatsapp_messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    phone_number_id uuid NOT NULL REFERENCES whatsapp_phone_numbers (id) ON DELETE CASCADE,
    wa_message_id text NOT NULL UNIQUE,
    direction message_direction NOT NULL,
    counterpart_number text NOT NULL,
    body text,
    media jsonb,
    delivery_status text NOT NULL DEFAULT 'sent'
        CHECK (delivery_status IN ('sent', 'delivered', 'read', 'failed')),
    sent_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX whatsapp_messages_tenant_id_idx ON whatsapp_messages (tenant_id);
CREATE INDEX whatsapp_messages_phone_sent_idx ON whatsapp_messages (phone_number_id, sent_at);
ALTER TABLE whatsapp_messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON whatsapp_messages USING (tenant_id = current_tenant_id());

CREATE TABLE whatsapp_message_templates (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    business_account_id uuid NOT NULL
        REFERENCES whatsapp_business_accounts (id) ON DELETE CASCADE,
    name text NOT NULL,
    language text NOT NULL DEFAULT 'es',
    category text NOT NULL CHECK (category IN ('utility', 'marketing', 'authentication')),
    components jsonb NOT NULL,
    approval_status text NOT NULL DEFAULT 'pending',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT whatsapp_message_templates_account_name_language_key
        UNIQUE (business_account_id, name, language)
);
CREATE INDEX whatsapp_message_templates_tenant_id_idx ON whatsapp_message_templates (tenant_id);
ALTER TABLE whatsapp_message_templates ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON whatsapp_message_templates
    USING (tenant_id = current_tenant_id());

CREATE TABLE accommodation_units_manual_chunks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    accommodation_unit_id uuid NOT NULL REFERENCES accommodation_units (id) ON DELETE CASCADE,
    chunk_index integer NOT NULL,
    section_title text,
    content text NOT NULL,
    char_count integer GENERATED ALWAYS AS (char_length(content)) STORED,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accommodation_units_manual_chunks_unit_chunk_key
        UNIQUE (accommodation_unit_id, chunk_index)
);
CREATE INDEX accommodation_units_manual_chunks_tenant_id_idx
    ON accommodation_units_manual_chunks (tenant_id);
ALTER TABLE accommodation_units_manual_chunks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON accommodation_units_manual_chunks
    USING (tenant_id = current_tenant_id());

CREATE TABLE motopress_room_types (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    motopress_accommodation_unit_id uuid NOT NULL
        REFERENCES motopress_accommodation_units (id) ON DELETE CASCADE,
    motopress_type_id bigint NOT NULL,
    title text NOT NULL,
    adults smallint NOT NULL DEFAULT 2,
    children smallint NOT NULL DEFAULT 0,
    base_price numeric(12, 2),
    raw jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX motopress_room_types_tenant_id_idx ON motopress_room_types (tenant_id);
CREATE INDEX motopress_room_types_unit_idx ON motopress_room_types (motopress_accommodation_unit_id);
ALTER TABLE motopress_room_types ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON motopress_room_types USING (tenant_id = current_tenant_id());

CREATE TABLE airbnb_motopress_accommodation_comparison (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    accommodation_id uuid NOT NULL REFERENCES accommodations (id) ON DELETE CASCADE,
    motopress_accommodation_id uuid NOT NULL
        REFERENCES motopress_accommodations (id) ON DELETE CASCADE,
    match_score numeric(5, 4) NOT NULL CHECK (match_score BETWEEN 0 AND 1),
    differences jsonb NOT NULL DEFAULT '[]'::jsonb,
    compared_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX airbnb_motopress_accommodation_comparison_accommodation_idx
    ON airbnb_motopress_accommodation_comparison (accommodation_id);
CREATE INDEX airbnb_motopress_accommodation_comparison_motopress_idx
    ON airbnb_motopress_accommodation_comparison (motopress_accommodation_id);
ALTER TABLE airbnb_motopress_accommodation_comparison ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON airbnb_motopress_accommodation_comparison USING (EXISTS (
    SELECT 1 FROM accommodations a
    WHERE a.id = accommodation_id AND a.tenant_id = current_tenant_id()));

-- Level 4 -------------------------------------------------------------------

CREATE TABLE reservation_accommodations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant_registry (id) ON DELETE CASCADE,
    reservation_id uuid NOT NULL,
    accommodation_unit_id uuid NOT NULL REFERENCES accommodation_units (id) ON DELETE CASCADE,
    nightly_rate numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reservation_accommodations_reservation_fkey
        FOREIGN KEY (reservation_id, tenant_id)
        REFERENCES guest_reservations (id, tenant_id) ON DELETE CASCADE,
    CONSTRAINT reservation_accommodations_reservation_unit_key
        UNIQUE (reservation_id, accommodation_unit_id)
);
CREATE INDEX reservation_accommodations_tenant_id_idx ON reservation_accommodations (tenant_id);
CREATE INDEX reservation_accommodations_unit_idx
    ON reservation_accommodations (accommodation_unit_id);
ALTER TABLE reservation_accommodations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON reservation_accommodations
    USING (tenant_id = current_tenant_id());

CREATE TABLE calendar_event_conflicts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    calendar_event_id uuid NOT NULL REFERENCES calendar_events (id) ON DELETE CASCADE,
    -- NULL when the event clashes with another calendar, not with a reservation.
    reservation_id uuid REFERENCES guest_reservations (id) ON DELETE CASCADE,
    conflict_type text NOT NULL CHECK (conflict_type IN ('overlap', 'double_booking', 'blocked')),
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    resolved boolean NOT NULL DEFAULT false,
    resolved_at timestamptz,
    detected_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX calendar_event_conflicts_event_idx ON calendar_event_conflicts (calendar_event_id);
CREATE INDEX calendar_event_conflicts_reservation_idx ON calendar_event_conflicts (reservation_id);
ALTER TABLE calendar_event_conflicts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON calendar_event_conflicts USING (EXISTS (
    SELECT 1 FROM calendar_events e
    WHERE e.id = calendar_event_id AND e.tenant_id = current_tenant_id()));

CREATE TABLE airbnb_motopress_unit_comparison (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    accommodation_unit_id uuid NOT NULL REFERENCES accommodation_units (id) ON DELETE CASCADE,
    motopress_accommodation_unit_id uuid NOT NULL
        REFERENCES motopress_accommodation_units (id) ON DELETE CASCADE,
    match_score numeric(5, 4) NOT NULL CHECK (match_score BETWEEN 0 AND 1),
    differences jsonb NOT NULL DEFAULT '[]'::jsonb,
    compared_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX airbnb_motopress_unit_comparison_unit_idx
    ON airbnb_motopress_unit_comparison (accommodation_unit_id);
CREATE INDEX airbnb_motopress_unit_comparison_motopress_idx
    ON airbnb_motopress_unit_comparison (motopress_accommodation_unit_id);
ALTER TABLE airbnb_motopress_unit_comparison ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON airbnb_motopress_unit_comparison USING (EXISTS (
    SELECT 1 FROM accommodation_units u
    WHERE u.id = accommodation_unit_id AND u.tenant_id = current_tenant_id()));

-- Developer search index over the app's own source. RLS is off, as in production.

CREATE TABLE code_embeddings (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    file_path text NOT NULL,
    chunk_index integer NOT NULL,
    language text NOT NULL DEFAULT 'typescript',
    content text NOT NULL,
    embedding vector(1536) NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT code_embeddings_file_chunk_key UNIQUE (file_path, chunk_index)
);
-- ef_construction below the default 64 keeps the build of a scaled-up demo fast.
CREATE INDEX code_embeddings_embedding_idx ON code_embeddings
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 32);

-- updated_at maintenance ----------------------------------------------------

-- One trigger per table that has the column, so a new table cannot be missed.
DO $$
DECLARE
    target record;
BEGIN
    FOR target IN
        SELECT c.table_name
        FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = 'public'
          AND c.column_name = 'updated_at'
          AND t.table_type = 'BASE TABLE'
        ORDER BY c.table_name
    LOOP
        EXECUTE format(
            'CREATE TRIGGER set_updated_at BEFORE UPDATE ON public.%I '
            'FOR EACH ROW EXECUTE FUNCTION public.set_updated_at()',
            target.table_name);
    END LOOP;
END
$$;

-- Deploy marker (outside public, so a refresh never copies it) --------------

CREATE SCHEMA IF NOT EXISTS supabase_migrations;
CREATE TABLE supabase_migrations.schema_migrations (
    version text PRIMARY KEY,
    name text,
    statements text[]
);
