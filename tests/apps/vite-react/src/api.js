// The recipes of the README: axios and ky with the tokenwarden client.
import axios from "axios";
import ky from "ky";

/** axios: ask the client for the header on every request. */
export function createAxios(client) {
  const api = axios.create();
  api.interceptors.request.use(async (config) => {
    const authorization = await client.authorizationHeader(); // refreshes first when due
    if (authorization) config.headers.set("Authorization", authorization);
    return config;
  });
  return api;
}

/** ky: a beforeRequest hook does the same. */
export function createKy(client) {
  return ky.create({
    hooks: {
      beforeRequest: [
        async (request) => {
          const authorization = await client.authorizationHeader();
          if (authorization) request.headers.set("Authorization", authorization);
        },
      ],
    },
  });
}
