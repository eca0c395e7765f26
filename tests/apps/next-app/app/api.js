"use client";
// The recipes of the README: axios and ky with the tokenwarden client.
import axios from "axios";
import ky from "ky";

/**
 * axios: ask the client for the headers of each request (none for an origin not allowed).
 * @param {import("tokenwarden").TokenClient} client
 */
export function createAxios(client) {
  const api = axios.create();
  api.interceptors.request.use(async (config) => {
    // refreshes first when due; null when signed out or the origin is not in allowedOrigins
    const headers = await client.authorize(config.method ?? "get", api.getUri(config));
    for (const [name, value] of Object.entries(headers ?? {})) config.headers.set(name, value);
    return config;
  });
  return api;
}

/**
 * ky: a beforeRequest hook does the same.
 * @param {import("tokenwarden").TokenClient} client
 */
export function createKy(client) {
  return ky.create({
    hooks: {
      beforeRequest: [
        async (request) => {
          const headers = await client.authorize(request.method, request.url);
          for (const [name, value] of Object.entries(headers ?? {})) request.headers.set(name, value);
        },
      ],
    },
  });
}
