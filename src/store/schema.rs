//! The portable schema: one `table!` per table, valid for both backends (see the two
//! migration trees under migrations/).

diesel::table! {
    organizations (id) {
        id -> Text,
        name -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        organization_id -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    vault_keys (id) {
        id -> Text,
        wrapped_key -> Binary,
        master_fingerprint -> Text,
        active -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    integrations (id) {
        id -> Text,
        organization_id -> Text,
        user_id -> Nullable<Text>,
        connector_type -> Text,
        status -> Text,
        external_id -> Nullable<Text>,
        metadata -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    integration_credentials (id) {
        id -> Text,
        integration_id -> Text,
        organization_id -> Text,
        credential_type -> Text,
        ciphertext -> Binary,
        encryption_key_id -> Text,
        expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    oauth_states (state_hash) {
        state_hash -> Text,
        organization_id -> Text,
        connector_type -> Text,
        user_id -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        consumed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    events (id) {
        id -> Text,
        organization_id -> Nullable<Text>,
        integration_id -> Nullable<Text>,
        connector_type -> Text,
        event_type -> Text,
        delivery_id -> Text,
        payload -> Text,
        received_at -> Timestamp,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        processed_at -> Nullable<Timestamp>,
        occurred_at -> Nullable<Timestamp>,
        delivery_scope -> Text,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Text,
        organization_id -> Nullable<Text>,
        actor -> Text,
        action -> Text,
        integration_id -> Nullable<Text>,
        details -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    routes (id) {
        id -> Text,
        organization_id -> Text,
        connector -> Text,
        event_type -> Text,
        action -> Text,
        settings -> Text,
        secrets -> Nullable<Binary>,
        encryption_key_id -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    poll_cursors (integration_id, stream) {
        integration_id -> Text,
        stream -> Text,
        cursor -> Nullable<Text>,
        last_polled_at -> Nullable<Timestamp>,
        next_poll_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    chat_messages (organization_id, connector, channel, subject) {
        organization_id -> Text,
        connector -> Text,
        channel -> Text,
        subject -> Text,
        message_ref -> Text,
        posted_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    cluster_nodes (node_id) {
        node_id -> Text,
        version -> Text,
        started_at -> Timestamp,
        heartbeat_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    integration_leases (integration_id) {
        integration_id -> Text,
        node_id -> Nullable<Text>,
        epoch -> BigInt,
        expires_at -> Timestamp,
    }
}

diesel::joinable!(api_tokens -> organizations (organization_id));
diesel::joinable!(integrations -> organizations (organization_id));
diesel::joinable!(integration_credentials -> integrations (integration_id));
diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    api_tokens,
    vault_keys,
    integrations,
    integration_credentials,
    oauth_states,
    events,
    audit_log,
    routes,
    poll_cursors,
    chat_messages,
    cluster_nodes,
    integration_leases,
);
