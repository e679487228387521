#include "wsb_shim.h"

void wsb_log(int level, const char *uuid, const char *file, int line, const char *text)
{
	/* The text is always an argument, never the format. */
	switch_log_printf(SWITCH_CHANNEL_ID_LOG, file, "mod_wsbridge", line, uuid, (switch_log_level_t) level, "%s\n", text);
}

switch_status_t wsb_channel_hangup(switch_channel_t *channel, switch_call_cause_t cause)
{
	switch_channel_hangup(channel, cause);
	return SWITCH_STATUS_SUCCESS;
}

switch_status_t wsb_channel_mark_answered(switch_channel_t *channel)
{
	return switch_channel_mark_answered(channel);
}

void wsb_channel_set_state(switch_channel_t *channel, switch_channel_state_t state)
{
	switch_channel_set_state(channel, state);
}

void wsb_channel_set_flag(switch_channel_t *channel, switch_channel_flag_t flag)
{
	switch_channel_set_flag(channel, flag);
}

int wsb_channel_ready(switch_channel_t *channel)
{
	return switch_channel_ready(channel) ? 1 : 0;
}

const char *wsb_channel_get_variable(switch_channel_t *channel, const char *name)
{
	return switch_channel_get_variable(channel, name);
}

const char *wsb_event_get_header(switch_event_t *event, const char *name)
{
	return switch_event_get_header(event, name);
}

switch_core_session_t *wsb_session_locate(const char *uuid)
{
	return switch_core_session_locate(uuid);
}

void *wsb_session_get_private(switch_core_session_t *session)
{
	return switch_core_session_get_private(session);
}

void wsb_session_destroy(switch_core_session_t **session)
{
	switch_core_session_destroy(session);
}

switch_status_t wsb_codec_init(switch_codec_t *codec, const char *name, uint32_t rate, int ms,
							   switch_memory_pool_t *pool)
{
	return switch_core_codec_init(codec, name, NULL, NULL, rate, ms, 1,
								  SWITCH_CODEC_FLAG_ENCODE | SWITCH_CODEC_FLAG_DECODE, NULL, pool);
}

int wsb_codec_ready(switch_codec_t *codec)
{
	return switch_core_codec_ready(codec) ? 1 : 0;
}

int wsb_config_params(const char *name, wsb_param_callback callback, void *context)
{
	switch_xml_t xml, cfg, settings, param;

	if (!(xml = switch_xml_open_cfg(name, &cfg, NULL))) {
		return -1;
	}
	if ((settings = switch_xml_child(cfg, "settings"))) {
		for (param = switch_xml_child(settings, "param"); param; param = param->next) {
			callback(context, switch_xml_attr_soft(param, "name"), switch_xml_attr_soft(param, "value"));
		}
	}
	switch_xml_free(xml);
	return 0;
}

int wsb_config_elements(const char *name, const char *section, const char *element, wsb_element_callback callback,
						void *context)
{
	switch_xml_t xml, cfg, parent, child;
	int place = 0, i;

	if (!(xml = switch_xml_open_cfg(name, &cfg, NULL))) {
		return -1;
	}
	if ((parent = switch_xml_child(cfg, section))) {
		for (child = switch_xml_child(parent, element); child; child = child->next, place++) {
			if (!child->attr || !child->attr[0]) {
				callback(context, place, NULL, NULL);
				continue;
			}
			/* attr holds name, value, name, value, ..., NULL */
			for (i = 0; child->attr[i] && child->attr[i + 1]; i += 2) {
				callback(context, place, child->attr[i], child->attr[i + 1]);
			}
		}
	}
	switch_xml_free(xml);
	return 0;
}

int wsb_check_network_list_ip(const char *ip_str, const char *list_name)
{
	return switch_check_network_list_ip(ip_str, list_name) ? 1 : 0;
}

void wsb_stream_write(switch_stream_handle_t *stream, const char *text)
{
	stream->write_function(stream, "%s", text);
}

switch_status_t wsb_fire_custom_event(switch_core_session_t *session, const char *subclass, const char *const *names,
									  const char *const *values, int count, const char *body)
{
	switch_event_t *event = NULL;
	int i;

	if (switch_event_create_subclass(&event, SWITCH_EVENT_CUSTOM, subclass) != SWITCH_STATUS_SUCCESS) {
		return SWITCH_STATUS_FALSE;
	}
	if (session) {
		switch_channel_event_set_data(switch_core_session_get_channel(session), event);
	}
	for (i = 0; i < count; i++) {
		switch_event_add_header_string(event, SWITCH_STACK_BOTTOM, names[i], values[i]);
	}
	if (body) {
		switch_event_add_body(event, "%s", body);
	}
	return switch_event_fire(&event);
}
